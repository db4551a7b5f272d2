/**
 * What the database or the driver answers reaches the caller as the store's
 * error, holding nothing of the statement: with the pool pointing at a
 * closed port, ended, or losing the server mid-statement, every operation
 * (and migrate, purgeExpired, the CLI) rejects with a `DatabaseError` whose
 * message, stack, own properties (enumerable or not), cause chain,
 * `Deno.inspect` and `JSON.stringify` hold no SQL, table name, hash,
 * subject, client id or grant id.
 */

import {
  assert,
  assertEquals,
  assertFalse,
  assertInstanceOf,
} from "@std/assert";
import postgres, { type Sql } from "../tools/postgres.ts";
import {
  CodeStoreError,
  createCodeStore,
  DatabaseError,
  DatabaseUnavailableError,
  hashCode,
  migrate,
  purgeExpired,
} from "../mod.ts";
import { cli } from "./support/cli.ts";
import {
  databaseUrl,
  grant,
  IN_A_MINUTE,
  isStored,
  randomCode,
  type TestDatabase,
  testDatabase,
} from "./support/database.ts";
import { errorTexts } from "./support/error_texts.ts";
import { startTcpProxy } from "./support/tcp_proxy.ts";

const RESILIENT = {
  fetch_types: false,
  connect_timeout: 2,
  backoff: false,
  onnotice: () => {},
} as const;

/** Values a leak would show: distinctive, so a match is no accident. */
const SUBJECT = "subject-7f3a9c";
const CLIENT_ID = "client-5e1b2d";
const GRANT_ID = "grant-9c4e8a";

/** Asserts that `error` is the store's, and holds none of `secrets`. */
function assertClean(
  error: unknown,
  secrets: readonly string[],
  what: string,
): asserts error is DatabaseError {
  assertInstanceOf(error, DatabaseError, what);
  assertInstanceOf(error, CodeStoreError, what);
  assertEquals((error as { cause?: unknown }).cause, undefined, what);
  const text = errorTexts(error).join("\n");
  for (const secret of secrets) {
    assertFalse(text.includes(secret), `${what}: the error holds ${secret}`);
  }
  for (const sql of ["delete from", "insert into", "select ", "returning"]) {
    assertFalse(text.toLowerCase().includes(sql), `${what}: it holds SQL`);
  }
}

/** Calls every store operation with a code and a grant of its own. */
async function everyOperation(
  store: ReturnType<typeof createCodeStore>,
): Promise<[string, unknown, string[]][]> {
  const code = randomCode();
  const secrets = [code, hashCode(code), SUBJECT, CLIENT_ID, GRANT_ID];
  const outcomes: [string, unknown, string[]][] = [];
  const calls: [string, () => Promise<unknown>][] = [
    ["put", () =>
      store.put({
        code,
        data: grant({
          subject: SUBJECT,
          clientId: CLIENT_ID,
          grantId: GRANT_ID,
        }),
        expiresAt: IN_A_MINUTE,
      })],
    ["take", () => store.take(code)],
    ["spent", () => store.spent(code)],
    ["revokeGrant", () => store.revokeGrant(GRANT_ID)],
  ];
  for (const [name, call] of calls) {
    outcomes.push([
      name,
      await call().then(() => "resolved", (e) => e),
      secrets,
    ]);
  }
  return outcomes;
}

function secretsOf(t: TestDatabase): string[] {
  return [t.table, t.schema, "codes_spent"];
}

/**
 * Asserts that every store operation, `migrate` and `purgeExpired` on
 * `pool` reject with a clean `DatabaseUnavailableError` for `reason`, the
 * operations having sent nothing.
 */
async function unavailableEverywhere(
  t: TestDatabase,
  pool: Sql,
  reason: string,
) {
  const store = createCodeStore(pool, { table: t.table });
  for (const [name, error, secrets] of await everyOperation(store)) {
    assertClean(error, [...secrets, ...secretsOf(t)], name);
    assertInstanceOf(error, DatabaseUnavailableError, name);
    assertEquals([error.reason, error.sent], [reason, false], name);
  }
  for (
    const [name, call] of [
      ["migrate", () => migrate(pool, { table: t.table })],
      ["purgeExpired", () => purgeExpired(pool, { table: t.table })],
    ] as const
  ) {
    const error = await call().catch((e) => e);
    assertClean(error, secretsOf(t), name);
    assertEquals(error.reason, reason, name);
  }
}

Deno.test("errors from a pool pointing at a closed port are the store's DatabaseUnavailableError, with nothing of the statement", async () => {
  await using t = await testDatabase();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  const pool = postgres(
    `postgres://postgres@127.0.0.1:${port}/test`,
    RESILIENT,
  );
  try {
    await unavailableEverywhere(t, pool, "ECONNREFUSED");
  } finally {
    await pool.end({ timeout: 1 });
  }
});

Deno.test("errors from an ended pool are the store's DatabaseUnavailableError, with nothing of the statement", async () => {
  await using t = await testDatabase();
  const pool = postgres(databaseUrl(), RESILIENT);
  const store = createCodeStore(pool, { table: t.table });
  assertEquals(await store.take(randomCode()), null); // it worked
  await pool.end({ timeout: 5 });
  await unavailableEverywhere(t, pool, "CONNECTION_ENDED");
});

Deno.test("errors from a pool that loses the server mid-statement are the store's, with nothing of the statement: sent, or without effect", async () => {
  await using t = await testDatabase();
  for (const operation of ["put", "take", "spent", "revokeGrant"] as const) {
    await using proxy = await startTcpProxy(databaseUrl());
    const pool = postgres(proxy.url, { ...RESILIENT, max: 1 });
    try {
      const store = createCodeStore(pool, { table: t.table });
      const code = randomCode();
      const secrets = [code, hashCode(code), SUBJECT, CLIENT_ID, GRANT_ID];
      const data = grant({
        subject: SUBJECT,
        clientId: CLIENT_ID,
        grantId: GRANT_ID,
      });
      if (operation !== "put") {
        await createCodeStore(t.sql, { table: t.table }).put({
          code,
          data,
          expiresAt: IN_A_MINUTE,
        });
      }
      assertEquals(await store.spent(randomCode()), null); // connected
      // The statement reaches the server; its answer never comes back.
      proxy.holdReplies();
      const call = operation === "put"
        ? store.put({ code, data, expiresAt: IN_A_MINUTE })
        : operation === "revokeGrant"
        ? store.revokeGrant(GRANT_ID)
        : store[operation](code);
      const outcome = call.then(() => "resolved", (e) => e);
      await new Promise((resolve) => setTimeout(resolve, 200));
      proxy.reset();
      const error = await outcome;
      assertClean(error, [...secrets, ...secretsOf(t)], operation);
      assertInstanceOf(error, DatabaseUnavailableError, operation);
      assertEquals(error.operation, operation);
      if (!error.sent) {
        // Not sent (postgres.js 3.4 writes a statement's parameters only
        // once the server has described it): it had no effect.
        const stored = await isStored(t, code);
        assertEquals(stored, operation !== "put", `${operation}: no effect`);
      }
    } finally {
      await pool.end({ timeout: 1 });
    }
  }
});

Deno.test("a server error (a missing table) is the store's DatabaseError: the SQLSTATE, not the server's text with the table's name", async () => {
  await using t = await testDatabase();
  const table = `${t.schema}.not_migrated`;
  const store = createCodeStore(t.sql, { table });
  for (const [name, error, secrets] of await everyOperation(store)) {
    assertClean(error, [...secrets, "not_migrated", t.schema], name);
    assertEquals(error.reason, "42P01", name);
  }
  const purged = await purgeExpired(t.sql, { table }).catch((e) => e);
  assertClean(purged, ["not_migrated", t.schema], "purgeExpired");
});

Deno.test("`cli` reports a database error without the table's name or any SQL", async () => {
  await using t = await testDatabase();
  const run = await cli(["stats", "--table", `${t.schema}.not_migrated`], {
    DATABASE_URL: databaseUrl(),
  });
  assertEquals(run.code, 1);
  assert(run.err.includes("42P01"), run.err);
  for (const text of ["not_migrated", "select", "from "]) {
    assertFalse(run.err.toLowerCase().includes(text), run.err);
  }
});
