/** The expiry sweeper. */

import {
  assert,
  assertEquals,
  assertRejects,
  assertStrictEquals,
} from "@std/assert";
import { createCodeStore, purgeExpired } from "../mod.ts";
import {
  connect,
  end,
  failMidResult,
  grant,
  orHung,
  randomCode,
  type TestDatabase,
  testDatabase,
} from "./support/database.ts";

const IN_AN_HOUR = Math.floor(Date.now() / 1000) + 3600;

/** Inserts `n` codes directly, expired an hour ago (or live). */
async function bulk(t: TestDatabase, n: number, expired: boolean) {
  await t.sql`
    insert into ${t.sql(t.table)} (code_hash, client_id, subject,
      redirect_uri, scope, code_challenge, code_challenge_method, expires_at)
    select translate(rtrim(encode(sha256(convert_to(
             ${crypto.randomUUID()} || i, 'UTF8')), 'base64'), '='), '+/', '-_'),
      'c', 'u', 'https://c.example/cb', '{}',
      'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'S256',
      now() + ${expired ? "-1 hour" : "1 hour"}::interval
    from generate_series(1, ${n}) i
  `;
}

async function counts(t: TestDatabase) {
  const [{ codes, tombstones }] = await t.sql<
    [{ codes: number; tombstones: number }]
  >`
    select (select count(*) from ${t.sql(t.table)})::int as codes,
           (select count(*) from ${t.sql(`${t.table}_spent`)})::int
             as tombstones
  `;
  return { codes, tombstones };
}

Deno.test("`purgeExpired()` deletes expired codes and expired tombstones, in batches, and counts them", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  await bulk(t, 2_500, true);
  await bulk(t, 100, false);
  // Tombstones: 30 spent codes, 20 of them made expired.
  const spent = Array.from({ length: 30 }, () => randomCode());
  for (const code of spent) {
    await store.put({ code, data: grant(), expiresAt: IN_AN_HOUR });
    await store.take(code);
  }
  await t.sql`
    update ${t.sql(`${t.table}_spent`)} set expires_at = now() - interval '1 s'
    where code_hash in (
      select code_hash from ${t.sql(`${t.table}_spent`)} limit 20
    )
  `;

  const result = await purgeExpired(t.sql, {
    table: t.table,
    batchSize: 1000,
  });
  assertEquals(result, { codes: 2_500, tombstones: 20 });
  assertEquals(await counts(t), { codes: 100, tombstones: 10 });
  assertEquals(
    await purgeExpired(t.sql, { table: t.table }),
    { codes: 0, tombstones: 0 },
  );
});

Deno.test("takes run during a large purge: none waits for it, none is lost or doubled", async () => {
  await using t = await testDatabase();
  await bulk(t, 200_000, true);
  const setup = createCodeStore(t.sql, { table: t.table });
  const live = Array.from({ length: 2_000 }, () => randomCode());
  await Promise.all(
    live.map((code) =>
      setup.put({ code, data: grant(), expiresAt: IN_AN_HOUR })
    ),
  );
  const pool = connect({ max: 8 });
  try {
    const store = createCodeStore(pool, { table: t.table });
    let purgeDone = false;
    const purge = purgeExpired(t.sql, { table: t.table, batchSize: 500 })
      .finally(() => purgeDone = true);
    let takenDuringPurge = 0;
    let next = 0;
    const wins = new Map<string, number>();
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < live.length) {
        const code = live[next++]!;
        if (await store.take(code)) wins.set(code, (wins.get(code) ?? 0) + 1);
        if (!purgeDone) takenDuringPurge++;
      }
    }));
    const purged = await purge;
    assertEquals(purged.codes, 200_000);
    assertEquals(wins.size, live.length, "every live code redeemed");
    assert([...wins.values()].every((n) => n === 1));
    // The takes did not queue behind the purge: they finished while it ran.
    console.log(
      `purge: ${purged.codes} rows in batches of 500; ${takenDuringPurge} of ` +
        `${live.length} takes completed while it ran`,
    );
    assertEquals(takenDuringPurge, live.length);
    assertEquals(await counts(t), { codes: 0, tombstones: live.length });
  } finally {
    await end(pool);
  }
});

Deno.test("`purgeExpired()` validates its options before any SQL", async () => {
  await using t = await testDatabase();
  for (
    const [options, kind] of [
      [{ batchSize: 0 }, RangeError],
      [{ batchSize: 1.5 }, RangeError],
      [{ batchSize: 100_001 }, RangeError],
      [{ batchSize: "10" }, TypeError],
      [{ timeoutMs: 0 }, RangeError],
      [{ table: "x;y" }, TypeError],
      [{ batch: 10 }, TypeError],
    ] as const
  ) {
    // deno-lint-ignore no-explicit-any
    await assertRejects(() => purgeExpired(t.sql, options as any), kind);
  }
  assertStrictEquals(
    (await purgeExpired(t.sql, { table: t.table })).codes,
    0,
  );
});

Deno.test("`purgeExpired()` is bounded by `timeoutMs`: a table locked elsewhere fails it in time, and its statement is cancelled", async () => {
  await using t = await testDatabase();
  const holder = await t.sql.reserve();
  let outcome: unknown;
  try {
    await holder`begin`;
    await holder`lock table ${holder(t.table)} in access exclusive mode`;
    outcome = await orHung(
      purgeExpired(t.sql, { table: t.table, timeoutMs: 300 }).then(
        () => "purged",
        (error) => String(error.code),
      ),
      30_000,
    );
    // The cancel request reached the server: nothing waits for the lock.
    for (let i = 0; i < 50; i++) {
      const [{ n }] = await t.sql<[{ n: number }]>`
        select count(*)::int as n from pg_stat_activity
        where wait_event_type = 'Lock' and query ilike '%doomed%'
      `;
      if (n === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert(i < 49, "the purge statement still waits for the lock");
    }
  } finally {
    await holder`rollback`;
    holder.release();
  }
  // The store's own 300 ms bound ended it, not the lock holder.
  assertEquals(outcome, "ERR_OPERATION_TIMEOUT");
});

Deno.test("after a statement failed mid-result on its connection, `purgeExpired()` still counts and sweeps every batch", async () => {
  await using t = await testDatabase();
  const sql = connect({ max: 1 });
  try {
    const store = createCodeStore(sql, { table: t.table });
    for (let i = 0; i < 5; i++) {
      await store.put({ code: randomCode(), data: grant(), expiresAt: 1 });
    }
    // The next result on that connection starts with holes.
    await failMidResult(sql);
    const purged = await purgeExpired(sql, { table: t.table, batchSize: 2 });
    assertEquals(purged.codes, 5);
  } finally {
    await end(sql);
  }
});
