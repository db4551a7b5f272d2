/**
 * One "node" of a multi-process load run (see `load.ts`). It reads one JSON
 * command per line on stdin and answers one JSON line on stdout:
 *
 * - `{"op":"init", ...WorkerPlan}`: opens its pools (every connection) and
 *   answers `{"ready":true}`;
 * - `{"op":"put"}`: stores its share of the codes (index % processes);
 * - `{"op":"take","from":a,"to":b}`: fires `racers` concurrent `take()`s of
 *   each code in [a, b), spread over its pools, and answers which codes it
 *   won, how many takes got null, how many winners got a grant other than
 *   the one stored, and the errors by kind.
 *
 * @module
 */

import { equal } from "@std/assert/equal";
import { createCodeStore } from "../../mod.ts";
import {
  connectTo,
  entryFor,
  newCodeFor,
  type WorkerPlan,
} from "./load_plan.ts";

type Command =
  | ({ op: "init" } & WorkerPlan)
  | { op: "put" }
  | { op: "take"; from: number; to: number }
  | { op: "exit" };

let plan: WorkerPlan | undefined;
let pools: ReturnType<typeof connectTo>[] = [];
let stores: ReturnType<typeof createCodeStore>[] = [];

const reply = (value: unknown) => console.log(JSON.stringify(value));

for await (const line of lines(Deno.stdin.readable)) {
  const command = JSON.parse(line) as Command;
  if (command.op === "exit") break;
  if (command.op === "init") {
    plan = command;
    pools = Array.from({ length: plan.pools }, () => connectTo(plan!));
    stores = pools.map((sql) => createCodeStore(sql, { table: plan!.table }));
    await Promise.all(
      pools.flatMap((sql) =>
        Array.from({ length: plan!.connections }, () => sql`select 1`)
      ),
    );
    reply({ ready: true });
  } else if (command.op === "put") {
    reply(await put(plan!));
  } else {
    reply(await take(plan!, command.from, command.to));
  }
}
await Promise.all(pools.map((sql) => sql.end({ timeout: 5 })));

async function put(plan: WorkerPlan) {
  const errors: Record<string, number> = {};
  let next = plan.index;
  let stored = 0;
  const width = plan.pools * plan.connections;
  await Promise.all(Array.from({ length: width }, async (_, lane) => {
    const store = stores[lane % stores.length]!;
    while (next < plan.codes) {
      const i = next;
      next += plan.processes;
      try {
        await store.put(newCodeFor(plan.seed, i));
        stored++;
      } catch (error) {
        count(errors, error);
      }
    }
  }));
  return { stored, errors };
}

async function take(plan: WorkerPlan, from: number, to: number) {
  const won: number[] = [];
  const errors: Record<string, number> = {};
  let nulls = 0;
  let mismatches = 0;
  const takes: Promise<void>[] = [];
  for (let i = from; i < to; i++) {
    const expected = entryFor(plan.seed, i);
    for (let r = 0; r < plan.racers; r++) {
      const store = stores[(r + plan.index) % stores.length]!;
      takes.push(
        store.take(newCodeFor(plan.seed, i).code).then((entry) => {
          if (entry === null) return void nulls++;
          won.push(i);
          if (!equal(entry, expected)) mismatches++;
        }, (error) => count(errors, error)),
      );
    }
  }
  await Promise.all(takes);
  return { won, nulls, mismatches, errors };
}

function count(errors: Record<string, number>, error: unknown) {
  const e = error as { code?: unknown; name?: unknown };
  const kind = String(e?.code ?? e?.name ?? "unknown");
  errors[kind] = (errors[kind] ?? 0) + 1;
}

async function* lines(stream: ReadableStream<Uint8Array>) {
  let buffer = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    buffer += text;
    let index;
    while ((index = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, index);
      buffer = buffer.slice(index + 1);
    }
  }
}
