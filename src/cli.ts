/**
 * The command line: migrate, purge and inspect a code store's tables.
 *
 * ```sh
 * deno install -g --allow-net --allow-env -n code-store jsr:@attesto/code-store/cli
 * code-store migrate
 * code-store purge --table auth.codes
 * code-store stats --json
 * code-store replication
 * ```
 *
 * Or without installing: `deno run --allow-net --allow-env
 * jsr:@attesto/code-store/cli migrate`. It needs no other permission.
 *
 * The database comes from `DATABASE_URL`, or from the `PG*` variables
 * (`PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD`) that managed
 * PostgreSQL services inject. `--help` prints the usage on stdout and exits
 * 0; every error is one line on stderr, which never quotes the password.
 * Exit codes: 0 done, 1 database error (for example unreachable), 2 usage
 * error (no command: the usage on stderr; an unknown command or option, a
 * bad option value, no database configured, a malformed `DATABASE_URL`);
 * `replication` also exits 3 when standbys replicate asynchronously (a
 * failover can lose redemptions), 4 when no standby is visible from the
 * server, and 5 when synchronous replication is configured but no
 * synchronous standby is connected (every commit waits).
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
import { databaseUrlProblem } from "./_database_url.ts";
import { describeReason } from "./_reasons.ts";
import { DatabaseError, DatabaseUnavailableError } from "./errors.ts";
import { type Driver, driverOf } from "./driver/driver.ts";
import { openPool } from "./driver/open.ts";
import type { PostgresPool } from "./pool.ts";
import { replicationReport } from "./_replication.ts";
import { migrate } from "./migrate.ts";
import { batchSize, MAX_PURGE_BATCH_SIZE, purgeExpired } from "./purge.ts";
import { parseTableName, quoteName } from "./table_name.ts";

const COMMANDS = ["migrate", "purge", "stats", "replication"] as const;
type Command = typeof COMMANDS[number];

const USAGE = `Usage: code-store <command> [options]

Commands:
  migrate       create or upgrade the codes table and its tombstone table
  purge         delete expired codes and expired tombstones, in batches
  stats         live codes, expired codes, tombstones, oldest row age
  replication   whether a failover can lose a redeemed code: synchronous
                replication settings and the standbys, as the server sees them

Options:
  --table <name>       the codes table (default authorization_codes),
                       optionally schema-qualified: auth.codes
  --batch-size <n>     purge: rows per statement (default 1000)
  --json               stats, replication: print JSON
  -h, --help           print this help

The database comes from DATABASE_URL
(postgres://user:password@host:5432/database, with / ? # @ % in the
password percent-encoded), or from PGHOST, PGPORT, PGDATABASE, PGUSER and
PGPASSWORD; PGCONNECT_TIMEOUT sets the connect timeout (default 10 s).

Exit codes: 0 done, 1 database error, 2 usage error; replication: 3 the
standbys are asynchronous (a failover can lose redemptions), 4 no standby
is visible from this server, 5 synchronous replication is configured but
no synchronous standby is connected (every commit waits).

Install (it needs only network and environment access):
  deno install -g --allow-net --allow-env -n code-store jsr:@attesto/code-store/cli
`;

/** A command line that cannot run, said in one line. */
class UsageError extends Error {}

/**
 * Runs one command and returns the process exit code. Output goes to
 * stdout; errors go to stderr, one line each, and never include the
 * password.
 *
 * @param args The command line, without the program name.
 * @returns 0 on success or `--help`, 1 on a database error, 2 on a usage
 * error (with no command, the usage goes to stderr); for `replication`, 3
 * when standbys are asynchronous, 4 when none is visible, 5 when commits
 * wait for a synchronous standby that is not connected.
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
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message}`);
    return 2;
  }
  if (parsed === "help") {
    console.log(USAGE.trimEnd());
    return 0;
  }
  if (parsed === "none") {
    console.error(USAGE.trimEnd());
    return 2;
  }
  const { command, options } = parsed;
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
  const malformed = url ? databaseUrlProblem(url) : portProblem(env("PGPORT"));
  if (malformed) {
    console.error(`error: ${url ? "DATABASE_URL" : "PGPORT"} ${malformed}`);
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

/** `PGPORT`'s problem, or `undefined`: a port, or a list for several hosts. */
function portProblem(value: string | undefined): string | undefined {
  if (value === undefined || value === "") return undefined;
  return value.split(",").every((port) =>
      /^[0-9]+$/.test(port) && Number(port) >= 1 && Number(port) <= 65535
    )
    ? undefined
    : "is not a port number (1 to 65535)";
}

/**
 * The command and its options; `"help"` for `-h`, `--help` or `help`;
 * `"none"` when no command is given.
 *
 * @throws {UsageError} With one line naming what is wrong.
 */
function parse(args: readonly string[]):
  | "help"
  | "none"
  | {
    command: Command;
    options: {
      table: string | undefined;
      batchSize: number | undefined;
      json: boolean;
    };
  } {
  const operands = args.indexOf("--");
  const flags = operands === -1 ? args : args.slice(0, operands);
  if (flags.includes("--help") || flags.includes("-h")) return "help";
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: [...args],
      allowPositionals: true,
      options: {
        table: { type: "string" },
        "batch-size": { type: "string" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (error) {
    throw new UsageError(optionError(error));
  }
  const [command, extra] = positionals;
  if (command === "help") return "help";
  if (command === undefined) return "none";
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new UsageError(
      `unknown command ${JSON.stringify(command)} (commands: ` +
        `${COMMANDS.join(", ")}; see --help)`,
    );
  }
  if (extra !== undefined) {
    throw new UsageError(
      `${command} takes no argument, got ${JSON.stringify(extra)}`,
    );
  }
  if (values.table !== undefined) {
    try {
      parseTableName(values.table);
    } catch {
      throw new UsageError(
        "--table must be a lower-case SQL identifier such as " +
          "authorization_codes or auth.codes (letters, digits and _; at " +
          "most 57 characters for the table, 63 for the schema)",
      );
    }
  }
  let size: number | undefined;
  if (values["batch-size"] !== undefined) {
    const text = values["batch-size"];
    try {
      size = batchSize(/^[0-9]+$/.test(text) ? Number(text) : NaN);
    } catch {
      throw new UsageError(
        `--batch-size must be an integer from 1 to ${MAX_PURGE_BATCH_SIZE}`,
      );
    }
  }
  return {
    command: command as Command,
    options: { table: values.table, batchSize: size, json: values.json },
  };
}

/** node:util's parseArgs error, as one line naming the option. */
function optionError(error: unknown): string {
  const { code, message } = error as { code?: string; message?: string };
  const option = message?.match(/'(-[^' ]*)/)?.[1] ?? "an option";
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option ${option} (see --help)`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return message?.includes("argument missing")
        ? `${option} needs a value`
        : `${option} takes no value`;
    default:
      return message?.split("\n")[0] ?? String(error);
  }
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
