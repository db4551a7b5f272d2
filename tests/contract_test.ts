/**
 * The `CodeStore` contract, run against every store: PostgreSQL with and
 * without coalescing, and the in-memory store for users' unit tests.
 */

import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStrictEquals,
} from "@std/assert";
import {
  type CodeStore,
  createCodeStore,
  DuplicateCodeError,
  hashCode,
  InvalidRecordError,
  type NewCode,
} from "../mod.ts";
import { createMemoryCodeStore } from "../src/memory_store.ts";
import {
  grant,
  IN_A_MINUTE,
  randomCode,
  testDatabase,
} from "./support/database.ts";

interface Subject extends AsyncDisposable {
  readonly store: CodeStore;
}

const STORES: Record<string, () => Promise<Subject>> = {
  "PostgreSQL, coalescing": async () => {
    const t = await testDatabase();
    return {
      store: createCodeStore(t.sql, { table: t.table }),
      [Symbol.asyncDispose]: () => t[Symbol.asyncDispose](),
    };
  },
  "PostgreSQL, coalesce: false": async () => {
    const t = await testDatabase();
    return {
      store: createCodeStore(t.sql, { table: t.table, coalesce: false }),
      [Symbol.asyncDispose]: () => t[Symbol.asyncDispose](),
    };
  },
  "memory": () =>
    Promise.resolve({
      store: createMemoryCodeStore(),
      [Symbol.asyncDispose]: () => Promise.resolve(),
    }),
};

const issue = (data = grant()): NewCode => ({
  code: randomCode(),
  data,
  expiresAt: IN_A_MINUTE,
});

const CONTRACT: Record<string, (store: CodeStore) => Promise<void>> = {
  "`take()` returns the exact entry, then null": async (store) => {
    const input = issue(grant({
      nonce: "n",
      claims: { a: [1, { b: null }] },
      resource: ["https://rs.example/"],
      grantId: "g",
    }));
    await store.put(input);
    assertEquals(await store.take(input.code), {
      codeHash: hashCode(input.code),
      expiresAt: IN_A_MINUTE,
      data: { dpopJkt: null, context: {}, ...input.data },
    });
    assertStrictEquals(await store.take(input.code), null);
  },
  "`take()` consumes and returns an expired code": async (store) => {
    const input = { ...issue(), expiresAt: 1 };
    await store.put(input);
    assertEquals((await store.take(input.code))?.expiresAt, 1);
  },
  "`put()` of a duplicate throws and keeps the original": async (store) => {
    const input = issue();
    await store.put(input);
    await assertRejects(
      () => store.put({ ...input, data: grant({ subject: "other" }) }),
      DuplicateCodeError,
    );
    assertEquals((await store.take(input.code))?.data.subject, "user-42");
  },
  "`put()` of a code already redeemed throws: a code is used once": async (
    store,
  ) => {
    const input = issue();
    await store.put(input);
    assert(await store.take(input.code));
    await assertRejects(() => store.put(input), DuplicateCodeError);
    assertStrictEquals(await store.take(input.code), null);
  },
  "`put()` rejects an invalid record naming the field": async (store) => {
    const input = issue(grant({ codeChallengeMethod: "plain" }));
    const error = await assertRejects(() => store.put(input));
    assertInstanceOf(error, InvalidRecordError);
    assertEquals(error.field, "data.codeChallengeMethod");
    assertStrictEquals(await store.take(input.code), null);
  },
  "`take()` and `spent()` reject a non-string, answer null to an impossible code":
    async (store) => {
      // deno-lint-ignore no-explicit-any
      await assertRejects(() => store.take(1 as any), TypeError);
      // deno-lint-ignore no-explicit-any
      await assertRejects(() => store.spent(null as any), TypeError);
      for (const code of ["", "\0", "é", "x".repeat(15), "x".repeat(513)]) {
        assertStrictEquals(await store.take(code), null);
        assertStrictEquals(await store.spent(code), null);
      }
    },
  "of 100 concurrent takes exactly one wins, and every loser sees the tombstone":
    async (store) => {
      const input = issue(grant({ grantId: "family" }));
      await store.put(input);
      const outcomes = await Promise.all(
        Array.from(
          { length: 100 },
          async () =>
            (await store.take(input.code)) ?? await store.spent(input.code),
        ),
      );
      const winners = outcomes.filter((o) => o && "data" in o);
      assertEquals(winners.length, 1);
      for (const o of outcomes) {
        if (o && !("data" in o)) assertEquals(o.grantId, "family");
        else assert(o, "a loser saw no tombstone");
      }
    },
  "`revokeGrant()` deletes the grant's live codes, and only them": async (
    store,
  ) => {
    const ours = [
      issue(grant({ grantId: "g-1" })),
      issue(grant({ grantId: "g-1" })),
    ];
    const other = issue(grant({ grantId: "g-2" }));
    for (const input of [...ours, other]) await store.put(input);
    assertEquals(await store.revokeGrant("g-1"), 2);
    for (const input of ours) {
      assertStrictEquals(await store.take(input.code), null);
      assertStrictEquals(await store.spent(input.code), null, "no tombstone");
    }
    assert(await store.take(other.code));
    assertEquals(await store.revokeGrant("g-1"), 0);
    // deno-lint-ignore no-explicit-any
    await assertRejects(() => store.revokeGrant(42 as any), TypeError);
    await assertRejects(() => store.revokeGrant(""), InvalidRecordError);
  },
  "`put()` and `revokeGrant()` refuse a short code, an oversize grant and a bad grant id alike, and write nothing":
    async (store) => {
      const refused = async (fn: () => Promise<unknown>, field: string) => {
        const error = await assertRejects(fn, InvalidRecordError);
        assertEquals(error.field, field);
        assertEquals(error.code, "ERR_INVALID_RECORD");
      };
      const short = issue();
      const shortCode = short.code.slice(0, 15);
      await refused(() => store.put({ ...short, code: shortCode }), "code");
      assertStrictEquals(await store.take(shortCode), null);
      const big = issue(grant({ context: { a: "x".repeat(4096) } }));
      const huge = issue(grant({
        claims: { a: "é".repeat(4096), b: "é".repeat(4096) },
        context: Object.fromEntries(
          Array.from({ length: 8 }, (_, i) => [`k${i}`, "€".repeat(4096)]),
        ),
      }));
      await store.put(big);
      await refused(() => store.put(huge), "data");
      assertStrictEquals(await store.take(huge.code), null);
      const bad = [
        "g".repeat(1025),
        "grant\0id",
        "grant\nid",
        "grant\x7Fid",
        "grant\x85id",
        "\uD800",
      ];
      for (const grantId of bad) {
        const input = issue(grant({ grantId }));
        await refused(() => store.put(input), "data.grantId");
        assertStrictEquals(await store.take(input.code), null);
        await refused(() => store.revokeGrant(grantId), "grantId");
      }
      const longest = issue(grant({ grantId: "g".repeat(1024) }));
      await store.put(longest);
      assertEquals(await store.revokeGrant("g".repeat(1024)), 1);
      assert(await store.take(big.code), "the valid record was stored");
    },
  "`spent()` is null before redemption and for codes never issued": async (
    store,
  ) => {
    const input = issue();
    await store.put(input);
    assertStrictEquals(await store.spent(input.code), null);
    assertStrictEquals(await store.spent(randomCode()), null);
  },
};

for (const [storeName, open] of Object.entries(STORES)) {
  for (const [rule, check] of Object.entries(CONTRACT)) {
    Deno.test(`${storeName}: ${rule}`, async () => {
      await using subject = await open();
      await check(subject.store);
    });
  }
}

Deno.test("memory: `purgeExpired()` and tombstone retention follow its clock", async () => {
  let now = 1_900_000_000_000;
  const store = createMemoryCodeStore({
    tombstoneRetentionSeconds: 60,
    now: () => now,
  });
  const expired = { ...issue(), expiresAt: 1_899_999_999 };
  const live = { ...issue(), expiresAt: 1_900_000_100 };
  const spent = issue();
  for (const input of [expired, live, spent]) await store.put(input);
  await store.take(spent.code);
  assertEquals((await store.spent(spent.code))?.spentAt, 1_900_000_000);
  assertEquals(store.purgeExpired(), { codes: 1, tombstones: 0 });
  now += 61_000;
  assertStrictEquals(await store.spent(spent.code), null);
  assertEquals(store.purgeExpired(), { codes: 0, tombstones: 1 });
  assert(await store.take(live.code));
  assertStrictEquals(await store.take(expired.code), null);
});
