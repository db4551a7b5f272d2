/**
 * Reuse detection: `take` writes a tombstone in the statement that spends
 * the code, and `spent` tells a later caller what to revoke.
 */

import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertLessOrEqual,
  assertRejects,
  assertStrictEquals,
} from "@std/assert";
import {
  createCodeStore,
  DatabaseError,
  DuplicateCodeError,
  hashCode,
  InvalidRecordError,
} from "../mod.ts";
import { driverOf } from "../src/driver/driver.ts";
import { deleteRows } from "../src/statements.ts";
import {
  connect,
  end,
  grant,
  IN_A_MINUTE,
  randomCode,
  statementCounter,
  storedCodes,
  testDatabase,
} from "./support/database.ts";

Deno.test("`spent()` returns the tombstone of a redeemed code: client, subject, grant id, when", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const code = randomCode();
  await store.put({
    code,
    data: grant({ grantId: "family-7" }),
    expiresAt: IN_A_MINUTE,
  });
  assertStrictEquals(await store.spent(code), null, "not redeemed yet");
  const before = Math.floor(Date.now() / 1000);
  assert(await store.take(code));
  const tombstone = await store.spent(code);
  assertEquals(tombstone && { ...tombstone, spentAt: 0 }, {
    codeHash: hashCode(code),
    clientId: "s6BhdRkqt3",
    subject: "user-42",
    redirectUri: "https://client.example.org/cb",
    codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    grantId: "family-7",
    spentAt: 0,
  });
  assert(tombstone!.spentAt >= before - 1 && tombstone!.spentAt <= before + 60);
  // Nothing else of the grant is kept: no scope, claims, nonce.
  const [row] = await t.sql`select * from ${t.sql(`${t.table}_spent`)}`;
  assertEquals(Object.keys(row!).sort(), [
    "client_id",
    "code_challenge",
    "code_hash",
    "expires_at",
    "grant_id",
    "redirect_uri",
    "spent_at",
    "subject",
  ]);
});

Deno.test("`spent()` answers null for a code never issued, and without a query for an impossible one", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });
  assertStrictEquals(await store.spent(randomCode()), null);
  queries = 0;
  for (const code of ["", "\0", "a".repeat(600), "é"]) {
    assertStrictEquals(await store.spent(code), null);
  }
  assertEquals(queries, 0);
  // deno-lint-ignore no-explicit-any
  await assertRejects(() => store.spent(42 as any), TypeError);
});

for (const coalesce of [true, false]) {
  Deno.test(`after a race every loser sees the winner's tombstone (coalesce: ${coalesce})`, async () => {
    await using t = await testDatabase();
    const pools = Array.from({ length: 4 }, () => connect({ max: 5 }));
    try {
      const stores = pools.map((sql) =>
        createCodeStore(sql, { table: t.table, coalesce })
      );
      for (let round = 0; round < 5; round++) {
        const code = randomCode();
        await stores[0]!.put({
          code,
          data: grant({ grantId: `family-${round}` }),
          expiresAt: IN_A_MINUTE,
        });
        const outcomes = await Promise.all(
          Array.from({ length: 40 }, async (_, i) => {
            const store = stores[i % 4]!;
            const entry = await store.take(code);
            return entry ? "won" : await store.spent(code);
          }),
        );
        assertEquals(outcomes.filter((o) => o === "won").length, 1);
        for (const outcome of outcomes.filter((o) => o !== "won")) {
          assert(outcome !== null, "a loser saw no tombstone");
          assertEquals(
            typeof outcome === "object" && outcome.grantId,
            `family-${round}`,
          );
        }
      }
    } finally {
      await Promise.all(pools.map(end));
    }
  });
}

Deno.test("the tombstone is written by the statement that spends the code: one statement, all or nothing", async () => {
  await using t = await testDatabase();
  const statements = await statementCounter(t);
  const store = createCodeStore(t.sql, { table: t.table });
  const code = randomCode();
  await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
  const before = await statements();
  assert(await store.take(code));
  assertEquals(await statements() - before, 1, "one DELETE statement");
  assert(await store.spent(code));

  // Without its tombstone table the statement fails as a whole: the code
  // is not spent.
  const other = randomCode();
  await store.put({ code: other, data: grant(), expiresAt: IN_A_MINUTE });
  await t.sql`drop table ${t.sql(`${t.table}_spent`)}`;
  const error = await assertRejects(() => store.take(other), DatabaseError);
  assertEquals(error.reason, "42P01");
  assertEquals(await storedCodes(t), 1);
});

Deno.test("tombstones expire after the retention", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, {
    table: t.table,
    tombstoneRetentionSeconds: 1,
  });
  const code = randomCode();
  await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
  await store.take(code);
  assert(await store.spent(code));
  await new Promise((resolve) => setTimeout(resolve, 1200));
  assertStrictEquals(await store.spent(code), null);
  const [{ remaining }] = await t.sql<[{ remaining: number }]>`
    select extract(epoch from expires_at - spent_at)::float8 as remaining
    from ${t.sql(`${t.table}_spent`)}
  `;
  assertLessOrEqual(remaining, 1);
});

for (const coalesce of [true, false]) {
  Deno.test(`\`put()\` of a code that was already redeemed is a DuplicateCodeError while its tombstone lasts (coalesce: ${coalesce})`, async () => {
    await using t = await testDatabase();
    const store = createCodeStore(t.sql, { table: t.table, coalesce });
    const code = randomCode();
    await store.put({
      code,
      data: grant({ subject: "first" }),
      expiresAt: IN_A_MINUTE,
    });
    assertEquals((await store.take(code))?.data.subject, "first");
    // Alone, and among other puts that share its statement.
    const others = Array.from({ length: 5 }, () => randomCode());
    const results = await Promise.allSettled([
      store.put({
        code,
        data: grant({ subject: "again" }),
        expiresAt: IN_A_MINUTE,
      }),
      ...others.map((other) =>
        store.put({ code: other, data: grant(), expiresAt: IN_A_MINUTE })
      ),
    ]);
    assertEquals(results[0]?.status, "rejected");
    assertInstanceOf(
      (results[0] as PromiseRejectedResult).reason,
      DuplicateCodeError,
    );
    for (const result of results.slice(1)) {
      assertEquals(result.status, "fulfilled");
    }
    assertStrictEquals(await store.take(code), null, "redeemed once only");
    assertEquals((await store.spent(code))?.subject, "first");
  });
}

Deno.test("a code stored again behind the store's back is not redeemed twice while its tombstone lasts", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const code = randomCode();
  await store.put({ code, data: grant({ grantId: "g1" }), expiresAt: 1 });
  assert(await store.take(code));
  // What a put racing the take of the same code could leave behind: the
  // row is back, though the code was already redeemed.
  await t.sql`
    insert into ${t.sql(t.table)} (code_hash, client_id, subject,
      redirect_uri, scope, code_challenge, code_challenge_method, expires_at)
    values (${hashCode(code)}, 'c', 's', 'https://c.example/cb', '{}',
      ${grant().codeChallenge}, 'S256',
      date_trunc('second', now()) + interval '1 minute')
  `;
  assertStrictEquals(await store.take(code), null);
  // The row is spent all the same, and the first tombstone is kept.
  assertEquals(await storedCodes(t), 0);
  assertEquals((await store.spent(code))?.grantId, "g1");
});

Deno.test("`spent()` validates a tombstone on the way out: one written by other means that breaks the rules is refused", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const code = randomCode();
  await t.sql`
    insert into ${t.sql(`${t.table}_spent`)} (code_hash, client_id, subject,
      redirect_uri, code_challenge, grant_id, spent_at, expires_at)
    values (${hashCode(code)}, 'client', 'user', 'not a uri',
      ${grant().codeChallenge}, null, now(), now() + interval '1 hour')
  `;
  const error = await assertRejects(() => store.spent(code));
  assertInstanceOf(error, InvalidRecordError);
  assertEquals(error.field, "redirectUri");
});

Deno.test("`take` runs a statement that is safe by itself: a hash list in one input matches nothing", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const codes = [randomCode(), randomCode()];
  for (const code of codes) {
    await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
  }
  // The statement, called directly, as no caller of the store could: an
  // input that would splice two hashes into an array literal.
  const run = deleteRows(driverOf(t.sql, "test"), {
    codes: t.table,
    spent: `${t.table}_spent`,
    retention: 60,
  });
  const crafted = `${hashCode(codes[0]!)},${hashCode(codes[1]!)}`;
  const outcomes = await run({
    inputs: [crafted],
    send: () => [0],
    waiting: () => true,
    signal: new AbortController().signal,
  });
  assertEquals(outcomes, [{ value: null }]);
  for (const code of codes) assert(await store.take(code), "still stored");
});

for (const coalesce of [true, false]) {
  Deno.test(`\`put()\` of a code whose redemption commits while the put waits is a DuplicateCodeError, and stores nothing (coalesce: ${coalesce})`, async () => {
    await using t = await testDatabase();
    const store = createCodeStore(t.sql, { table: t.table, coalesce });
    const code = randomCode();
    await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
    // A redemption in flight: the take's delete and tombstone, not yet
    // committed (what `take`'s one statement does, held open).
    const taker = await t.sql.reserve();
    let again: Promise<unknown>;
    try {
      await taker`begin`;
      await taker`
        with gone as (
          delete from ${taker(t.table)} where code_hash = ${hashCode(code)}
          returning *
        )
        insert into ${taker(`${t.table}_spent`)} (code_hash, client_id,
          subject, redirect_uri, code_challenge, grant_id, spent_at, expires_at)
        select code_hash, client_id, subject, redirect_uri, code_challenge,
          grant_id, now(), now() + interval '1 day'
        from gone
      `;
      // The same code value stored again: its insert waits for the take.
      again = store.put({ code, data: grant(), expiresAt: IN_A_MINUTE })
        .then(() => "stored", (error) => error);
      for (let i = 0;; i++) {
        const [{ n }] = await t.sql<[{ n: number }]>`
          select count(*)::int as n from pg_stat_activity
          where wait_event_type = 'Lock' and query ilike '%insert into%'
            and pid <> pg_backend_pid()
        `;
        if (n > 0) break;
        assert(i < 500, "the put never waited for the take");
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await taker`commit`;
    } finally {
      taker.release();
    }
    assertInstanceOf(await again, DuplicateCodeError);
    assertEquals(
      await storedCodes(t),
      0,
      "no row that could never be redeemed",
    );
  });
}
