/**
 * The test database: connections to `DATABASE_URL` and isolated tables.
 *
 * @module
 */

import postgres, { type Sql } from "../../tools/postgres.ts";
import { hashCode, migrate } from "../../mod.ts";
import type { PoolOptions } from "../../tools/load/load_plan.ts";

export type { PoolOptions };

/** The server under test; `deno task test` sets it. */
export function databaseUrl(): string {
  const url = Deno.env.get("DATABASE_URL");
  if (!url) {
    throw new Error(
      "DATABASE_URL is not set: run `deno task test`, which starts an " +
        "embedded PostgreSQL, or point DATABASE_URL at a server",
    );
  }
  return url;
}

/**
 * A postgres.js pool on the test database. `onnotice` is silenced (the
 * `IF NOT EXISTS` notices of repeated migrations).
 */
export function connect(options: PoolOptions = {}): Sql {
  return postgres(databaseUrl(), { onnotice: () => {}, ...options });
}

/** Ends a pool without waiting forever on a dead connection. */
export function end(sql: Sql): Promise<void> {
  return sql.end({ timeout: 5 });
}

/** A pool and a migrated table in a schema of its own. */
export interface TestDatabase extends AsyncDisposable {
  /** A pool on the test database. */
  readonly sql: Sql;
  /** The schema-qualified table name, for the `table` option. */
  readonly table: string;
  /** The schema, dropped on dispose. */
  readonly schema: string;
}

/**
 * Opens a pool and creates a fresh schema with a migrated codes table in it;
 * disposing drops the schema and ends the pool.
 */
export async function testDatabase(
  options: PoolOptions = {},
): Promise<TestDatabase> {
  const sql = connect(options);
  const schema = `test_${crypto.randomUUID().replaceAll("-", "")}`;
  const table = `${schema}.codes`;
  try {
    await sql`create schema ${sql(schema)}`;
    await migrate(sql, { table });
  } catch (error) {
    await end(sql);
    throw error;
  }
  return {
    sql,
    table,
    schema,
    async [Symbol.asyncDispose]() {
      try {
        await sql`drop schema ${sql(schema)} cascade`;
      } finally {
        await end(sql);
      }
    },
  };
}

/**
 * Counts the INSERT and DELETE statements run on the table, server-side (a
 * statement-level trigger), whatever the client did to send them.
 */
export async function statementCounter(
  t: TestDatabase,
): Promise<() => Promise<number>> {
  const { sql, schema, table } = t;
  const counter = `${schema}.statements`;
  await sql`create sequence ${sql(counter)} minvalue 0 start 0`;
  await sql`
    create function ${sql(`${schema}.count_statement`)}() returns trigger
    language plpgsql as ${
    sql.unsafe(`$$ begin perform nextval('${counter}'); return null; end $$`)
  }
  `;
  await sql`
    create trigger count_statements after insert or delete on ${sql(table)}
    for each statement execute function ${sql(`${schema}.count_statement`)}()
  `;
  return async () => {
    const [{ n }] = await sql<[{ n: number }]>`
      select (case when is_called then last_value + 1 else 0 end)::int as n
      from ${sql(counter)}
    `;
    return n;
  };
}

/** A random code of 256 bits, as a server would issue. */
export function randomCode(): string {
  return crypto.getRandomValues(new Uint8Array(32)).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
}

/** A valid grant, with overrides. */
export function grant(
  overrides: Record<string, unknown> = {},
): import("../../mod.ts").GrantData {
  return {
    clientId: "s6BhdRkqt3",
    subject: "user-42",
    redirectUri: "https://client.example.org/cb",
    scope: ["openid", "profile"],
    codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    codeChallengeMethod: "S256",
    ...overrides,
  } as import("../../mod.ts").GrantData;
}

/**
 * Runs a statement that fails after sending rows, on the pool's only
 * connection: postgres.js 3.4 then leaves holes at the start of the next
 * result on it (porsager/postgres #1119, #1181).
 */
export async function failMidResult(sql: Sql): Promise<void> {
  try {
    await sql`
      select case when n < 5 then n else 1 / (n - n) end
      from generate_series(1, 10) n
    `.raw();
  } catch (error) {
    if ((error as { code?: unknown }).code === "22012") return;
    throw error;
  }
  throw new Error("the statement did not fail");
}

/**
 * `promise`'s value, or `"hung"` if it has not settled after `ms` (a bound
 * for a call that must settle by itself, not a measure); the timer is
 * cleared either way.
 */
export async function orHung<T>(
  promise: Promise<T>,
  ms: number,
): Promise<T | "hung"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<"hung">((resolve) => {
        timer = setTimeout(() => resolve("hung"), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until `check()` holds, looking every 100 ms (a check that throws
 * counts as not yet); throws after `timeout` ms with `what` and what
 * `describe()` (or the last error) says.
 */
export async function until(
  check: () => Promise<boolean>,
  timeout: number,
  what: string,
  describe?: () => Promise<unknown>,
): Promise<void> {
  const deadline = performance.now() + timeout;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    if (performance.now() > deadline) {
      const seen = describe ? await describe().catch((e) => e) : last;
      throw new Error(
        `timed out waiting for ${what}: ${JSON.stringify(seen) ?? seen}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** An `expiresAt` a minute after the test module was loaded (seconds). */
export const IN_A_MINUTE: number = Math.floor(Date.now() / 1000) + 60;

/** How many codes `t`'s table holds now. */
export async function storedCodes(
  t: { readonly sql: Sql; readonly table: string },
): Promise<number> {
  const [{ n }] = await t.sql<[{ n: number }]>`
    select count(*)::int as n from ${t.sql(t.table)}
  `;
  return n;
}

/** Whether `t`'s table holds the entry of `code` now. */
export async function isStored(
  t: { readonly sql: Sql; readonly table: string },
  code: string,
): Promise<boolean> {
  const [{ stored }] = await t.sql<[{ stored: boolean }]>`
    select exists (
      select from ${t.sql(t.table)} where code_hash = ${hashCode(code)}
    ) as stored
  `;
  return stored;
}

/** Rows of a test table held locked until released. */
export interface RowLock extends AsyncDisposable {
  /** Ends the locking transaction (once; later calls wait for it). */
  release(): Promise<void>;
}

/**
 * Holds the rows of `codes` locked (FOR UPDATE) on a connection of its own
 * until `release()`, or until disposed (so a failing test never leaves a
 * lock behind).
 */
export async function lockRows(
  t: TestDatabase,
  codes: readonly string[],
): Promise<RowLock> {
  const locker = await t.sql.reserve();
  await locker`begin`;
  await locker`
    select 1 from ${locker(t.table)}
    where code_hash in ${locker(codes.map(hashCode))} for update
  `;
  let released: Promise<void> | undefined;
  const release = () =>
    released ??= locker`rollback`.then(() => locker.release());
  return { release, [Symbol.asyncDispose]: release };
}

/** Holds the row of `code` locked: {@linkcode lockRows} of one code. */
export function lockRow(t: TestDatabase, code: string): Promise<RowLock> {
  return lockRows(t, [code]);
}

/** Statements on `t`'s tables waiting for a lock, on the server. */
export async function waitingOnLock(t: TestDatabase): Promise<number> {
  const [{ n }] = await t.sql<[{ n: number }]>`
    select count(*)::int as n from pg_stat_activity
    where wait_event_type = 'Lock' and query ilike ${`%${t.schema}%`}
  `;
  return n;
}
