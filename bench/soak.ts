/**
 * `deno task soak`: the multi-process race at any scale. Not part of CI.
 *
 * ```sh
 * deno task soak --codes 1000000 --racers 8 --processes 4 --pools 2
 * ```
 *
 * Every code is raced by `--racers` concurrent `take()`s spread over
 * `--processes` OS processes (`--pools` postgres.js pools each). The run
 * fails (exit 1) unless every code is redeemed exactly once with the grant
 * that was stored and no row is left. Uses `DATABASE_URL` (in a schema of
 * its own, dropped afterwards) or an embedded PostgreSQL.
 *
 * @module
 */

import postgres from "../tools/postgres.ts";
import { migrate } from "../mod.ts";
import { databaseFromEnv } from "../tools/embedded_postgres.ts";
import { type LoadReport, runLoad } from "../tools/load/load.ts";
import { numberFlag, readFlags } from "../tools/flags.ts";

const values = readFlags(Deno.args, {
  codes: { type: "string" },
  racers: { type: "string" },
  processes: { type: "string" },
  pools: { type: "string" },
  connections: { type: "string" },
  round: { type: "string" },
  "prepare-false": { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
});
if (values.help) {
  console.log(
    "deno task soak [--codes N (100000)] [--racers N (8)] " +
      "[--processes N (2)] [--pools N (2)] [--connections N (10)] " +
      "[--round N (2000)] [--prepare-false]",
  );
  Deno.exit(0);
}
const codes = numberFlag("codes", values.codes, 100_000, "count");
const racers = numberFlag("racers", values.racers, 8, "count");
const processes = numberFlag("processes", values.processes, 2, "count");
const pools = numberFlag("pools", values.pools, 2, "count");
const connections = numberFlag("connections", values.connections, 10, "count");
const round = numberFlag("round", values.round, 2000, "count");
if (racers % processes !== 0) {
  console.error("--racers must be a multiple of --processes");
  Deno.exit(2);
}

const { url, server } = await databaseFromEnv();
const sql = postgres(url, { max: 1, onnotice: () => {} });
const schema = `soak_${crypto.randomUUID().replaceAll("-", "")}`;
const table = `${schema}.codes`;
let report: LoadReport | undefined;
try {
  await sql`create schema ${sql(schema)}`;
  await migrate(sql, { table });
  console.log(
    `soak: ${codes} codes x ${racers} racers, ${processes} processes x ` +
      `${pools} pools x ${connections} connections` +
      (server ? ", embedded PostgreSQL" : ", DATABASE_URL"),
  );
  report = await runLoad({
    url,
    table,
    codes,
    processes,
    poolsPerProcess: pools,
    connections,
    racersPerProcess: racers / processes,
    round,
    poolOptions: values["prepare-false"] ? { prepare: false } : {},
    onProgress(done, r) {
      const line = `  ${done}/${codes} codes  winners ${r.winners}  ` +
        `double ${r.doubleRedemptions}  errors ${errorCount(r)}  ` +
        `${Math.round(r.takesPerSecond)} takes/s`;
      Deno.stdout.writeSync(new TextEncoder().encode(`\r\x1b[2K${line}`));
    },
  });
  console.log();
} finally {
  await sql`drop schema if exists ${sql(schema)} cascade`.catch(() => {});
  await sql.end({ timeout: 5 });
  await server?.destroy();
}

const r = report!;
console.log(`
| figure              | value |
| ------------------- | ----- |
| codes               | ${r.codes} |
| stored              | ${r.stored} (${Math.round(r.stored / r.putSeconds)}/s) |
| takes               | ${r.takes} |
| winners             | ${r.winners} |
| double redemptions  | ${r.doubleRedemptions} |
| unredeemed          | ${r.unredeemed} |
| wrong grant         | ${r.mismatches} |
| nulls               | ${r.nulls} |
| errors              | ${JSON.stringify(r.errors)} |
| unhandled rejections | ${r.unhandled} |
| rows left           | ${r.rowsLeft} |
| take throughput     | ${Math.round(r.takesPerSecond)} takes/s over ${
  r.takeSeconds.toFixed(1)
} s |`);
const ok = r.winners === r.codes && r.doubleRedemptions === 0 &&
  r.mismatches === 0 && r.rowsLeft === 0 && errorCount(r) === 0 &&
  r.unhandled === 0;
console.log(ok ? "\nok" : "\nFAILED");
Deno.exit(ok ? 0 : 1);

function errorCount(r: LoadReport): number {
  return Object.values(r.errors).reduce((a, b) => a + b, 0);
}
