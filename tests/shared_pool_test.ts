/**
 * The store on the application's own pool: it occupies at most
 * `maxConnections` of it (half by default), so while its takes wait on
 * locked rows the application's queries still get a connection.
 */

import { assert, assertEquals, assertNotEquals } from "@std/assert";
import postgres, { type Sql } from "../tools/postgres.ts";
import { type CodeStore, createCodeStore } from "../mod.ts";
import {
  databaseUrl,
  grant,
  IN_A_MINUTE,
  lockRows,
  orHung,
  randomCode,
  type TestDatabase,
  testDatabase,
} from "./support/database.ts";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Stores `n` codes and holds all their rows locked, on a connection of its own. */
async function lockedCodes(t: TestDatabase, n: number) {
  const direct = createCodeStore(t.sql, { table: t.table });
  const codes = Array.from({ length: n }, () => randomCode());
  await Promise.all(
    codes.map((code) =>
      direct.put({ code, data: grant(), expiresAt: IN_A_MINUTE })
    ),
  );
  return Object.assign(await lockRows(t, codes), { codes });
}

/**
 * Sends a take of each code, one every 10 ms, and, while they wait,
 * the application's `select 1` on the same pool, several times: whether
 * each answered within a second.
 */
async function appQueriesWhileTakesWait(
  pool: Sql,
  store: CodeStore,
  codes: readonly string[],
) {
  const takes: Promise<unknown>[] = [];
  for (const code of codes) {
    takes.push(store.take(code).catch((error) => error));
    await delay(10);
  }
  const answers: (number | "hung")[] = [];
  for (let i = 0; i < 5; i++) {
    const answer = await orHung(
      pool`select 1 as one`.then(([row]) => row!.one as number),
      1000,
    );
    answers.push(answer);
  }
  return { takes, answers };
}

Deno.test("while 100 takes wait on locked rows, the application's queries on the same pool (max 4) answer within a second", async () => {
  await using t = await testDatabase();
  const pool = postgres(databaseUrl(), { max: 4, onnotice: () => {} });
  try {
    await using locked = await lockedCodes(t, 100);
    const store = createCodeStore(pool, { table: t.table, timeoutMs: 20_000 });
    const { takes, answers } = await appQueriesWhileTakesWait(
      pool,
      store,
      locked.codes,
    );
    assertEquals(answers, [1, 1, 1, 1, 1], "every select 1 answered");
    // The takes all waited; once the rows are free each gets its entry.
    const settled = await orHung(Promise.race(takes), 0);
    assertEquals(settled, "hung", "no take had finished");
    await locked.release();
    const entries = await Promise.all(takes);
    assert(
      entries.every((entry) => entry !== null && !(entry instanceof Error)),
    );
  } finally {
    await pool.end({ timeout: 5 });
  }
});

Deno.test("(control) with `maxConnections` equal to the pool's `max`, the takes waiting on locks leave the application no connection", async () => {
  await using t = await testDatabase();
  const pool = postgres(databaseUrl(), { max: 4, onnotice: () => {} });
  try {
    await using locked = await lockedCodes(t, 100);
    const store = createCodeStore(pool, {
      table: t.table,
      timeoutMs: 20_000,
      maxConnections: 4,
    });
    const { takes, answers } = await appQueriesWhileTakesWait(
      pool,
      store,
      locked.codes,
    );
    assertNotEquals(answers, [1, 1, 1, 1, 1]);
    assertEquals(answers[0], "hung");
    await locked.release();
    await Promise.all(takes);
  } finally {
    await pool.end({ timeout: 5 });
  }
});
