/**
 * The codes table and its tombstone table: their DDL, and a migration that
 * applies it idempotently.
 *
 * @module
 */

import type { Sql } from "postgres";
import { bounded } from "./_cancel.ts";
import { SHA256_BASE64URL } from "./_grammar.ts";
import { knownOptions, timeoutMs } from "./options.ts";
import { parseTableName, type TableName } from "./table_name.ts";

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

// The tables' own check of a SHA-256 base64url value: the same pattern as
// the store's (it holds no quote).
const BASE64URL_43 = `'${SHA256_BASE64URL.source}'`;

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
  const codes = quote(table.qualified);
  const spent = quote(table.spent);
  // An index lives in its table's schema; its name stays within 63 bytes.
  const index = (name: string, column = "expires_at") =>
    quote(`${name}_${column}_idx`.slice(0, 63));
  return `CREATE TABLE IF NOT EXISTS ${codes} (
  -- base64url SHA-256 of the code; "C" collation: byte order, no locale cost.
  code_hash text COLLATE "C" PRIMARY KEY CHECK (code_hash ~ ${BASE64URL_43}),
  client_id text NOT NULL CHECK (client_id <> ''),
  subject text NOT NULL CHECK (subject <> ''),
  redirect_uri text NOT NULL CHECK (redirect_uri <> ''),
  scope text[] NOT NULL,
  code_challenge text NOT NULL CHECK (code_challenge ~ ${BASE64URL_43}),
  code_challenge_method text NOT NULL CHECK (code_challenge_method = 'S256'),
  nonce text,
  dpop_jkt text,
  claims jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(claims) = 'object'),
  resource text[] NOT NULL DEFAULT '{}',
  expires_at timestamptz NOT NULL,
  inserted_at timestamptz NOT NULL DEFAULT now()
);
-- 0.2: the grant (token family) a code starts, for reuse detection.
ALTER TABLE ${codes} ADD COLUMN IF NOT EXISTS grant_id text;
-- 0.2: what else the token endpoint needs (an OpenID provider's acr, sid...).
ALTER TABLE ${codes} ADD COLUMN IF NOT EXISTS context jsonb NOT NULL
  DEFAULT '{}' CHECK (jsonb_typeof(context) = 'object');
CREATE INDEX IF NOT EXISTS ${index(table.name)} ON ${codes} (expires_at);
-- 0.2: the live codes of a grant, for revokeGrant().
CREATE INDEX IF NOT EXISTS ${index(table.name, "grant_id")}
  ON ${codes} (grant_id) WHERE grant_id IS NOT NULL;
-- 0.2: tombstones of redeemed codes, kept until expires_at.
CREATE TABLE IF NOT EXISTS ${spent} (
  code_hash text COLLATE "C" PRIMARY KEY CHECK (code_hash ~ ${BASE64URL_43}),
  client_id text NOT NULL,
  subject text NOT NULL,
  redirect_uri text NOT NULL,
  code_challenge text NOT NULL,
  grant_id text,
  spent_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS ${index(`${table.name}_spent`)}
  ON ${spent} (expires_at);
`;
}

// Parts are validated as [a-z0-9_]+, so quoting needs no escaping.
function quote(name: string): string {
  return name.split(".").map((part) => `"${part}"`).join(".");
}

/**
 * Creates the codes table, its tombstone table and their expiry indexes if
 * they do not exist, and upgrades tables made by an earlier version. Safe
 * to run at every start, from any number of processes at once: it runs in
 * one transaction under an advisory lock.
 *
 * @param sql A postgres.js instance.
 * @param options The table name and the time bound.
 * @returns When the table exists.
 * @throws {TypeError} If `options.table` is not a valid identifier, an
 * option is unknown, or a value is of the wrong type.
 * @throws {RangeError} If `timeoutMs` is out of range.
 * @throws {OperationTimeoutError} If it took longer than `timeoutMs`.
 * @throws {Error} Database errors, as postgres.js raised them (for example
 * when the schema of a qualified name does not exist, or `55P03` when a
 * lock was not granted in time).
 *
 * @example
 * ```ts ignore
 * import postgres from "postgres";
 * import { migrate } from "@attesto/code-store";
 *
 * const sql = postgres(Deno.env.get("DATABASE_URL")!);
 * await migrate(sql);
 * ```
 */
export async function migrate(
  sql: Sql,
  options: MigrateOptions = {},
): Promise<void> {
  const text = migrationSql(options);
  const limit = timeoutMs(options.timeoutMs, DEFAULT_MIGRATE_TIMEOUT_MS);
  // The transaction is not one query to cancel: its own statement_timeout
  // and lock_timeout end it on the server, and `bounded` the caller's wait.
  await bounded(
    "migrate",
    limit,
    sql.begin(async (tx) => {
      // A migration run at every start would otherwise send a notice per
      // object ("already exists, skipping"), which postgres.js logs.
      await tx.unsafe(
        limit === Infinity
          ? "set local client_min_messages = warning"
          : `set local client_min_messages = warning; set local statement_timeout = ${
            Math.ceil(limit)
          }; set local lock_timeout = ${Math.ceil(limit)}`,
      );
      // Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
      await tx`select pg_advisory_xact_lock(hashtext('@attesto/code-store migrate'))`;
      // DDL takes no parameters; the text holds only the validated name.
      await tx.unsafe(text);
    }),
  );
}
