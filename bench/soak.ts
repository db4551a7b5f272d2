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

import { parseArgs } from "node:util";
import postgres from "../tools/postgres.ts";
import { migrate } from "../mod.ts";
import { databaseFromEnv } from "../tools/embedded_postgres.ts";
import { type LoadReport, runLoad } from "../tools/load/load.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    codes: { type: "string", default: "100000" },
    racers: { type: "string", default: "8" },
    processes: { type: "string", default: "2" },
    pools: { type: "string", default: "2" },
    connections: { type: "string", default: "10" },
    round: { type: "string", default: "2000" },
    "prepare-false": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(
    "deno task soak [--codes N] [--racers N] [--processes N] [--pools N] " +
      "[--connections N] [--round N] [--prepare-false]",
  );
  Deno.exit(0);
}
const number = (name: keyof typeof values) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${name} must be a positive integer`);
    Deno.exit(2);
  }
  return n;
};
const codes = number("codes");
const racers = number("racers");
const processes = number("processes");
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
      `${values.pools} pools x ${values.connections} connections` +
      (server ? ", embedded PostgreSQL" : ", DATABASE_URL"),
  );
  report = await runLoad({
    url,
    table,
    codes,
    processes,
    poolsPerProcess: number("pools"),
    connections: number("connections"),
    racersPerProcess: racers / processes,
    round: number("round"),
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
