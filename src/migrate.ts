/**
 * The codes table and its tombstone table: their DDL, and a migration that
 * applies it idempotently.
 *
 * @module
 */

import { withDeadline } from "./_deadline.ts";
import { type Driver, driverOf } from "./driver/driver.ts";
import { hashCode } from "./hash_code.ts";
import type { PostgresPool } from "./pool.ts";
import { CODE_TABLE, type Column, names, SPENT_TABLE } from "./_columns.ts";
import { knownOptions, timeoutMs } from "./options.ts";
import { parseTableName, quoteName, type TableName } from "./table_name.ts";

/** Options for {@linkcode migrate} and {@linkcode migrationSql}. */
export interface MigrateOptions {
  /**
   * The table, optionally schema-qualified (`"auth.codes"`); the schema must
   * exist. Defaults to `"authorization_codes"`.
   */
  readonly table?: string | undefined;
  /**
   * `migrate` only: how long it may take, in milliseconds (default 30 000;
   * `Infinity` for no bound). Its statements run with that
   * `statement_timeout` and `lock_timeout` (a table another transaction
   * holds locked cannot stall it), and past it the call rejects with
   * `OperationTimeoutError`; the migration is one transaction, so it then
   * took effect entirely or not at all.
   */
  readonly timeoutMs?: number | undefined;
}

/** The default of {@linkcode MigrateOptions.timeoutMs}: 30 seconds. */
export const DEFAULT_MIGRATE_TIMEOUT_MS = 30_000;

/**
 * The DDL of the codes table and of its tombstone table (`<table>_spent`),
 * for hosts that run their own migrations. It is idempotent (`IF NOT
 * EXISTS`), upgrades a database made by an earlier version, and is exactly
 * what {@linkcode migrate} runs. It holds no values, only the validated,
 * quoted table names.
 *
 * @param options The table name.
 * @returns The SQL text: `CREATE TABLE`, `ALTER TABLE` and `CREATE INDEX`
 * statements.
 * @throws {TypeError} If `options.table` is not a valid identifier.
 *
 * @example
 * ```ts
 * import { migrationSql } from "@attesto/code-store";
 * import { assertStringIncludes } from "@std/assert";
 *
 * const ddl = migrationSql({ table: "auth.codes" });
 * assertStringIncludes(ddl, 'CREATE TABLE IF NOT EXISTS "auth"."codes"');
 * ```
 */
export function migrationSql(options: MigrateOptions = {}): string {
  const o = knownOptions(options, ["table", "timeoutMs"]);
  return ddl(parseTableName(o.table));
}

function ddl(table: TableName): string {
  const codes = quoteName(table.qualified);
  const spent = quoteName(table.spent);
  const [expiry, grants, spentExpiry] = indexNames(table).map(quoteName);
  const column = (c: Column) =>
    `${c.comment ? `  -- ${c.comment}\n` : ""}  ${c.name} ${c.ddl}`;
  const added = CODE_TABLE.filter((c) => c.since !== undefined);
  return `CREATE TABLE IF NOT EXISTS ${codes} (
${CODE_TABLE.filter((c) => c.since === undefined).map(column).join(",\n")}
);
${
    added.map((c) =>
      `-- ${c.since}: ${c.comment ?? c.name}
ALTER TABLE ${codes} ADD COLUMN IF NOT EXISTS ${c.name} ${c.ddl};`
    ).join("\n")
  }
CREATE INDEX IF NOT EXISTS ${expiry} ON ${codes} (expires_at);
-- 0.2: the live codes of a grant, for revokeGrant().
CREATE INDEX IF NOT EXISTS ${grants}
  ON ${codes} (grant_id) WHERE grant_id IS NOT NULL;
-- 0.2: tombstones of redeemed codes, kept until expires_at.
CREATE TABLE IF NOT EXISTS ${spent} (
${SPENT_TABLE.map(column).join(",\n")}
);
CREATE INDEX IF NOT EXISTS ${spentExpiry}
  ON ${spent} (expires_at);
`;
}

/**
 * The columns a current schema has, by table: what {@linkcode migrate}
 * looks for before it runs any DDL.
 */
const CURRENT_COLUMNS = {
  codes: names(CODE_TABLE),
  spent: names(SPENT_TABLE),
} as const;

/**
 * The names of the three indexes: the codes' expiry, the codes' grant, the
 * tombstones' expiry. An index lives in its table's schema, and a name
 * longer than PostgreSQL's 63 bytes keeps its first 54 characters
 * and a hash of the whole (a plain cut could equal the tombstone table's
 * own name, and `IF NOT EXISTS` would then skip the index silently).
 */
function indexNames(table: TableName): string[] {
  return [
    `${table.name}_expires_at_idx`,
    `${table.name}_grant_id_idx`,
    `${table.name}_spent_expires_at_idx`,
  ].map(identifier);
}

function identifier(name: string): string {
  if (name.length <= 63) return name;
  const digest = hashCode(name).replaceAll(/[^a-z0-9]/gi, "").toLowerCase();
  return `${name.slice(0, 54)}_${digest.slice(0, 8)}`;
}

/**
 * Whether the tables, their columns and their indexes all exist: a read of
 * the catalog (`to_regclass` and `pg_attribute`), which takes no lock on
 * the tables and needs no privilege on them.
 */
async function isCurrent(
  driver: Driver,
  table: TableName,
  signal: AbortSignal,
  written: () => void,
): Promise<boolean> {
  const indexes = indexNames(table).map((index) =>
    quoteName(table.schema ? `${table.schema}.${index}` : index)
  );
  const count = (relation: string, columns: string) => `
    (select count(*) from pg_attribute
      where attrelid = to_regclass($1->>'${relation}')
        and attnum > 0 and not attisdropped
        and attname::text in (select jsonb_array_elements_text($1->'${columns}'))
    )::int::text`;
  const rows = await driver.send({
    text: `select ${count("codes", "codeColumns")}, ${
      count("spent", "spentColumns")
    },
      (select count(*) from jsonb_array_elements_text($1->'indexes') i
        where to_regclass(i) is not null
      )::int::text`,
    payload: () => (written(), {
      codes: quoteName(table.qualified),
      codeColumns: CURRENT_COLUMNS.codes,
      spent: quoteName(table.spent),
      spentColumns: CURRENT_COLUMNS.spent,
      indexes,
    }),
  }, signal);
  const [codes, spent, found] = (rows[0] ?? []).map(Number);
  return codes === CURRENT_COLUMNS.codes.length &&
    spent === CURRENT_COLUMNS.spent.length && found === indexes.length;
}

/**
 * Creates the codes table, its tombstone table and their indexes if they do
 * not exist, and upgrades tables made by an earlier version. Safe to run at
 * every start, from any number of processes at once.
 *
 * When the schema is current (the usual start), it only reads the catalog
 * and returns: no DDL, no lock on the tables, and no privilege beyond what
 * the store itself needs, so a starting instance never stalls a `take` and
 * an application role that owns nothing can run it. Otherwise it runs
 * {@linkcode migrationSql} in one transaction under an advisory lock; that
 * upgrade needs `CREATE` on the schema (or ownership of the tables) and
 * takes the tables' locks (an `ALTER TABLE` waits for every reader and
 * blocks every `take` while it waits, within `timeoutMs`): run it at deploy
 * time, before the new version serves.
 *
 * @param pool A postgres.js pool (3.4 or 4.x).
 * @param options The table name and the time bound.
 * @returns When the tables are current.
 * @throws {TypeError} If `pool` is not a pool of a supported postgres.js
 * version, `options.table` is not a valid identifier, an option is
 * unknown, or a value is of the wrong type.
 * @throws {RangeError} If `timeoutMs` is out of range.
 * @throws {OperationTimeoutError} If it took longer than `timeoutMs`.
 * @throws {DatabaseError} If the database failed it (`reason` is the
 * SQLSTATE: `3F000` when the schema of a qualified name does not exist,
 * `42501` when an upgrade lacks privileges, `55P03` when a lock was not
 * granted in time), or ({@linkcode DatabaseUnavailableError}) gave no
 * answer.
 *
 * @example
 * ```ts ignore
 * import process from "node:process";
 * import postgres from "postgres";
 * import { migrate } from "@attesto/code-store";
 *
 * const sql = postgres(process.env.DATABASE_URL!);
 * await migrate(sql);
 * ```
 */
export async function migrate(
  pool: PostgresPool,
  options: MigrateOptions = {},
): Promise<void> {
  const driver = driverOf(pool, "migrate");
  const o = knownOptions(options, ["table", "timeoutMs"]);
  const table = parseTableName(o.table);
  const limit = timeoutMs(o.timeoutMs, DEFAULT_MIGRATE_TIMEOUT_MS);
  const started = performance.now();
  await withDeadline(driver, "migrate", limit, async (signal, written) => {
    if (await isCurrent(driver, table, signal, written)) return;
    written(); // the transaction may be written, whatever follows
    const left = Math.max(1, limit - (performance.now() - started));
    // The transaction is not one statement to cancel: its own
    // statement_timeout and lock_timeout end it on the server, and the
    // deadline the caller's wait.
    await driver.transaction([
      // A migration would otherwise send a notice per object that exists
      // ("already exists, skipping"), which postgres.js logs.
      left === Infinity
        ? "set local client_min_messages = warning"
        : `set local client_min_messages = warning; set local statement_timeout = ${
          Math.ceil(left)
        }; set local lock_timeout = ${Math.ceil(left)}`,
      // Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
      "select pg_advisory_xact_lock(hashtext('@attesto/code-store migrate'))",
      // DDL takes no parameters; the text holds only the validated name.
      ddl(table),
    ], signal);
  });
}
