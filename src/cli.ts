/**
 * The command line: migrate, purge and inspect a code store's tables.
 *
 * ```sh
 * deno run -A jsr:@attesto/code-store/cli migrate
 * deno run -A jsr:@attesto/code-store/cli purge --table auth.codes
 * deno run -A jsr:@attesto/code-store/cli stats --json
 * deno run -A jsr:@attesto/code-store/cli replication
 * ```
 *
 * The database comes from `DATABASE_URL`, or from the `PG*` variables
 * (`PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD`) that managed
 * PostgreSQL services inject. Exit codes: 0 done, 1 database error (for
 * example unreachable), 2 usage error (unknown command or option, no
 * database configured); `replication` also exits 3 when standbys replicate
 * asynchronously (a failover can lose redemptions), 4 when no standby
 * is visible from the server, and 5 when synchronous replication is
 * configured but no synchronous standby is connected (every commit waits).
 *
 * @example Run it from code
 * ```ts ignore
 * import process from "node:process";
 * import { main } from "@attesto/code-store/cli";
 *
 * process.exit(await main(["stats", "--json"]));
 * ```
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { databaseError } from "./_database_error.ts";
import { describeReason } from "./_reasons.ts";
import { DatabaseError, DatabaseUnavailableError } from "./errors.ts";
import { type Driver, driverOf } from "./driver/driver.ts";
import { openPool } from "./driver/open.ts";
import type { PostgresPool } from "./pool.ts";
import { replicationReport } from "./_replication.ts";
import { migrate } from "./migrate.ts";
import { batchSize, MAX_PURGE_BATCH_SIZE, purgeExpired } from "./purge.ts";
import { parseTableName, quoteName } from "./table_name.ts";

const USAGE = `Usage: code-store <command> [options]

Commands:
  migrate   create or upgrade the codes table and its tombstone table
  purge     delete expired codes and expired tombstones, in batches
  stats     live codes, expired codes, tombstones, oldest row age
  replication
            whether a failover can lose a redeemed code: synchronous
            replication settings and the standbys, as the server sees them

Options:
  --table <name>       the codes table (default authorization_codes),
                       optionally schema-qualified: auth.codes
  --batch-size <n>     purge: rows per statement (default 1000)
  --json               stats, replication: print JSON
  -h, --help           this help

The database comes from DATABASE_URL, or from PGHOST, PGPORT, PGDATABASE,
PGUSER and PGPASSWORD; PGCONNECT_TIMEOUT sets the connect timeout (10 s).

Exit codes: 0 done, 1 database error, 2 usage error; replication: 3 the
standbys are asynchronous (a failover can lose redemptions), 4 no standby
is visible from this server, 5 synchronous replication is configured but
no synchronous standby is connected (every commit waits).
`;

class UsageError extends Error {}

/**
 * Runs one command and returns the process exit code. Output goes to
 * stdout; errors go to stderr and never include the password.
 *
 * @param args The command line, without the program name.
 * @returns 0 on success, 1 on a database error, 2 on a usage error; for
 * `replication`, 3 when standbys are asynchronous, 4 when none is
 * visible, 5 when commits wait for a synchronous standby that is not
 * connected.
 *
 * @example
 * ```ts
 * import { main } from "@attesto/code-store/cli";
 * import { assertEquals } from "@std/assert";
 *
 * assertEquals(await main(["--help"]), 0);
 * ```
 */
export async function main(args: readonly string[]): Promise<number> {
  let command: string | undefined;
  let options: {
    table?: string | undefined;
    batchSize?: number | undefined;
    json: boolean;
  };
  try {
    ({ command, options } = parse(args));
  } catch (error) {
    console.error(`error: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (command === undefined || command === "help") {
    console.log(USAGE);
    return 0;
  }
  const env = (name: string) => process.env[name];
  const url = env("DATABASE_URL");
  if (!url && !["PGHOST", "PGDATABASE", "PGUSER"].some(env)) {
    console.error(
      "error: no database configured: set DATABASE_URL (for example " +
        "postgres://user:password@host:5432/db?sslmode=require) or the PG* " +
        "variables (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD)",
    );
    return 2;
  }
  const malformed = url ? urlProblem(url) : undefined;
  if (malformed) {
    console.error(`error: DATABASE_URL ${malformed}`);
    return 2;
  }
  const settings = {
    max: 1,
    // Seconds; libpq's variable, as for the other PG* settings.
    connect_timeout: Number(env("PGCONNECT_TIMEOUT")) || 10,
  };
  let sql: PostgresPool;
  try {
    sql = openPool(url, settings);
  } catch {
    // The driver's message may quote the URL, password included.
    console.error(
      "error: the database settings are not valid (DATABASE_URL or PG*)",
    );
    return 2;
  }
  try {
    const table = options.table;
    if (command === "migrate") {
      await migrate(sql, { table });
      const name = parseTableName(table);
      console.log(`migrated ${name.qualified} and ${name.spent}`);
    } else if (command === "purge") {
      const { codes, tombstones } = await purgeExpired(sql, {
        table,
        batchSize: options.batchSize,
      });
      console.log(
        `purged ${codes} expired codes and ${tombstones} expired tombstones`,
      );
    } else if (command === "replication") {
      const driver = driverOf(sql, "replication");
      const report = await replicationReport(driver).catch((error) => {
        throw databaseError(driver, "replication", error, true);
      });
      console.log(
        options.json ? JSON.stringify(report) : [
          report.message,
          "",
          `synchronous_standby_names  ${
            report.synchronousStandbyNames || "(empty)"
          }`,
          `synchronous_commit         ${report.synchronousCommit}`,
          ...report.standbys.map((s) =>
            `standby                    ${s.name}: ${s.state}, ${s.syncState}`
          ),
        ].join("\n"),
      );
      // Commits wait for a standby that is not there: every commit hangs.
      if (report.waitingForStandby) return 5;
      return { none: 0, asynchronous: 3, unknown: 4 }[report.risk];
    } else {
      const driver = driverOf(sql, "stats");
      const stats = await readStats(driver, table).catch((error) => {
        throw databaseError(driver, "stats", error, true);
      });
      console.log(
        options.json ? JSON.stringify(stats) : Object.entries(stats)
          .map(([k, v]) => `${k.padEnd(20)} ${v ?? "-"}`).join("\n"),
      );
    }
    return 0;
  } catch (error) {
    console.error(`error: ${describe(error)}`);
    return 1;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/**
 * What is wrong with a connection URL, in words that quote none of it, or
 * `undefined`. A password with an unencoded `/`, `#`, `?` or `@` breaks the
 * URL's structure: the password then shows up as a host, a port, a path or
 * a fragment, and would be printed in an error.
 */
function urlProblem(url: string): string | undefined {
  const advice =
    "percent-encode reserved characters in the user name and password " +
    "(/ as %2F, # as %23, ? as %3F, @ as %40, : as %3A)";
  const scheme = /^(postgres|postgresql):\/\//.exec(url);
  if (!scheme) {
    return "must start with postgres:// or postgresql://";
  }
  if (url.includes("#")) return `has a # in it: ${advice}`;
  // The host list, as postgres.js reads it: several hosts are allowed.
  const rest = url.slice(scheme[0].length);
  const authority = rest.split(/[/?]/)[0]!;
  const hosts = authority.slice(authority.lastIndexOf("@") + 1);
  let parsed: URL;
  try {
    parsed = new URL(url.replace(hosts, hosts.split(",")[0]!));
  } catch {
    return `is not a valid URL: ${advice}`;
  }
  const database = parsed.pathname.slice(1);
  if (database.includes("/") || database.includes("@")) {
    return `has a database name with / or @ in it: ${advice}`;
  }
  return undefined;
}

function parse(args: readonly string[]) {
  const { values, positionals } = parseArgs({
    args: [...args],
    allowPositionals: true,
    options: {
      table: { type: "string" },
      "batch-size": { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (positionals.length > 1) {
    throw new UsageError(`unexpected argument: ${positionals[1]}`);
  }
  let command = values.help ? "help" : positionals[0];
  if (
    command !== undefined &&
    !["migrate", "purge", "stats", "replication", "help"].includes(command)
  ) {
    throw new UsageError(`unknown command: ${command}`);
  }
  if (command === undefined && args.length > 0) command = "help";
  if (values.table !== undefined) parseTableName(values.table);
  let size: number | undefined;
  if (values["batch-size"] !== undefined) {
    try {
      size = batchSize(Number(values["batch-size"]));
    } catch {
      throw new UsageError(
        `--batch-size must be an integer from 1 to ${MAX_PURGE_BATCH_SIZE}`,
      );
    }
  }
  return {
    command,
    options: { table: values.table, batchSize: size, json: values.json },
  };
}

async function readStats(driver: Driver, table: string | undefined) {
  const name = parseTableName(table);
  const [codes = []] = (await driver.send({
    text: `select
      count(*) filter (where expires_at >= now())::int::text,
      count(*) filter (where expires_at < now())::int::text,
      floor(extract(epoch from now() - min(inserted_at)))::int::text
    from ${quoteName(name.qualified)}`,
  })).map((row) => row.map((text) => text === null ? null : Number(text)));
  const [tombstones = []] = (await driver.send({
    text: `select
      count(*) filter (where expires_at > now())::int::text,
      count(*) filter (where expires_at <= now())::int::text
    from ${quoteName(name.spent)}`,
  })).map((row) => row.map(Number));
  return {
    table: name.qualified,
    liveCodes: codes[0] as number,
    expiredCodes: codes[1] as number,
    oldestCodeAgeSeconds: codes[2] as number | null,
    tombstones: tombstones[0] as number,
    expiredTombstones: tombstones[1] as number,
  };
}

function describe(error: unknown): string {
  if (error instanceof DatabaseUnavailableError) {
    return `cannot reach the database (${describeReason(error.reason)})`;
  }
  if (error instanceof DatabaseError) {
    return `the database failed (${
      describeReason(error.reason).replace(
        "run migrate()",
        "run the migrate command first",
      )
    })`;
  }
  return error instanceof Error ? error.message : String(error);
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
