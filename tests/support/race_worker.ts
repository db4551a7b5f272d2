/**
 * One "node" of a multi-process race: opens its pools, says `ready`, waits
 * for `go` on stdin, then redeems every code it was given with as many
 * concurrent `take()`s as asked, and prints one JSON line: the entries it
 * won, keyed by code, and the number of nulls and errors.
 *
 * ```sh
 * deno run -A tests/support/race_worker.ts <table> <pools> <racers> <code>...
 * ```
 *
 * The codes come on the command line: this is a test harness, and the
 * codes are random test values.
 *
 * @module
 */

import { createCodeStore } from "../../mod.ts";
import { connect, end } from "./database.ts";

const [table, poolsArg, racersArg, ...codes] = Deno.args;
const pools = Array.from(
  { length: Number(poolsArg) },
  () => connect({ max: 10 }),
);
const stores = pools.map((sql) => createCodeStore(sql, { table: table! }));
// Open every connection now, so the race is between queries, not connects.
await Promise.all(
  pools.flatMap((sql) => Array.from({ length: 10 }, () => sql`select 1`)),
);

console.log("ready");
for await (const chunk of Deno.stdin.readable) {
  if (new TextDecoder().decode(chunk).includes("go")) break;
}

const won: Record<string, unknown> = {};
let nulls = 0;
const errors: string[] = [];
let n = 0;
await Promise.all(
  codes.flatMap((code) =>
    Array.from({ length: Number(racersArg) }, async () => {
      const store = stores[n++ % stores.length]!;
      try {
        const entry = await store.take(code);
        if (entry === null) nulls++;
        else if (code in won) errors.push(`won twice in one process`);
        else won[code] = entry;
      } catch (error) {
        errors.push(String(error));
      }
    })
  ),
);
console.log(JSON.stringify({ won, nulls, errors }));
await Promise.all(pools.map(end));
