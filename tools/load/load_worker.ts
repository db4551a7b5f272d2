/**
 * One "node" of a multi-process load run (see `load.ts`). It reads one JSON
 * command per line on stdin and answers one JSON line on stdout:
 *
 * - `{"op":"init", ...WorkerPlan}`: opens its pools (every connection) and
 *   answers `{"ready":true}`;
 * - `{"op":"put"}`: stores its share of the codes (index % processes);
 * - `{"op":"take","from":a,"to":b}` or `{"op":"take","codes":[...]}`: fires
 *   `racers` concurrent `take()`s of each code, spread over its pools, and
 *   answers which codes it won, for which codes a call failed, how many
 *   takes got null, how many winners got a grant other than the one stored,
 *   and the errors by kind;
 * - `{"op":"pools"}`: runs as many concurrent 0.2 s queries on each pool as
 *   it has connections, and answers how many distinct backends ran them.
 *
 * Every answer also counts the rejections nobody handled (they are caught
 * here, so the worker lives on to report them).
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
  | { op: "take"; codes: number[] }
  | { op: "pools" }
  | { op: "exit" };

let plan: WorkerPlan | undefined;
let pools: ReturnType<typeof connectTo>[] = [];
let stores: ReturnType<typeof createCodeStore>[] = [];
let unhandled = 0;
const verbose = Deno.env.get("LOAD_VERBOSE") !== undefined;

globalThis.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  unhandled++;
  console.error("load worker: unhandled rejection:", event.reason);
});

const reply = (value: object) =>
  console.log(JSON.stringify({ ...value, unhandled }));

for await (const line of lines(Deno.stdin.readable)) {
  const command = JSON.parse(line) as Command;
  if (command.op === "exit") break;
  if (command.op === "init") {
    plan = command;
    pools = Array.from({ length: plan.pools }, () => connectTo(plan!));
    stores = pools.map((sql) =>
      createCodeStore(sql, { ...plan!.storeOptions, table: plan!.table })
    );
    await Promise.all(
      pools.flatMap((sql) =>
        Array.from({ length: plan!.connections }, () => sql`select 1`)
      ),
    );
    reply({ ready: true });
  } else if (command.op === "put") {
    reply(await put(plan!));
  } else if (command.op === "pools") {
    reply({ backends: await Promise.all(pools.map(backends)) });
  } else {
    const codes = "codes" in command ? command.codes : Array.from(
      { length: command.to - command.from },
      (_, i) => command.from + i,
    );
    reply(await take(plan!, codes));
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

async function take(plan: WorkerPlan, codes: readonly number[]) {
  const won: number[] = [];
  const errored = new Set<number>();
  const errors: Record<string, number> = {};
  let nulls = 0;
  let mismatches = 0;
  const takes: Promise<void>[] = [];
  for (const i of codes) {
    const expected = entryFor(plan.seed, i);
    for (let r = 0; r < plan.racers; r++) {
      const store = stores[(r + plan.index) % stores.length]!;
      takes.push(
        store.take(newCodeFor(plan.seed, i).code).then((entry) => {
          if (entry === null) return void nulls++;
          won.push(i);
          if (!equal(entry, expected)) mismatches++;
        }, (error) => {
          errored.add(i);
          count(errors, error);
        }),
      );
    }
  }
  await Promise.all(takes);
  return { won, errored: [...errored], nulls, mismatches, errors };
}

/**
 * How many distinct backends run `connections` concurrent 0.2 s queries: as
 * many as the pool has connections, unless it lost some. A round in which a
 * query fails is run again (up to 3 times): postgres.js 3.4 rejects the
 * first query after a reconnect with the error its previous server sent
 * (porsager/postgres #1223), without losing the connection.
 */
async function backends(sql: ReturnType<typeof connectTo>) {
  let pids = new Set<number>();
  for (let round = 0; round < 3; round++) {
    pids = new Set<number>();
    let failed = 0;
    const queries = Array.from({ length: plan!.connections }, async () => {
      try {
        const [row] = await sql<[{ pid: number }]>`
          select pg_backend_pid() as pid, pg_sleep(0.2)
        `;
        pids.add(row.pid);
      } catch {
        failed++;
      }
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(queries),
      new Promise((resolve) => timer = setTimeout(resolve, 5000)),
    ]);
    clearTimeout(timer);
    if (failed === 0) break;
  }
  return pids.size;
}

function count(errors: Record<string, number>, error: unknown) {
  // A store error's reason (the SQLSTATE or the driver's code), else its code.
  const e = error as { reason?: unknown; code?: unknown; name?: unknown };
  const kind = String(e?.reason ?? e?.code ?? e?.name ?? "unknown");
  if (verbose && !(kind in errors)) {
    console.error(`load worker ${plan?.index}: first ${kind}:`, error);
  }
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
