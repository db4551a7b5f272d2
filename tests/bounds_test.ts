/**
 * The bounds `put` and `revokeGrant` enforce before any query: a code of at
 * least 16 characters, a grant of at most 64 KiB of JSON, and one rule for
 * grant ids at both ends. Against the real database, counting the queries
 * the pool sends (postgres.js's `debug` option) and reading the table.
 */

import { assert, assertEquals, assertRejects } from "@std/assert";
import { createCodeStore, InvalidRecordError, type NewCode } from "../mod.ts";
import {
  grant,
  IN_A_MINUTE,
  randomCode,
  storedCodes,
  testDatabase,
} from "./support/database.ts";

Deno.test("`put()` refuses a code shorter than 16 characters with InvalidRecordError, before any query; 16 is accepted", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });
  queries = 0;
  for (const code of ["Q", "QZx", "test-code-Q", "0123456789QZxwv"]) {
    const error = await assertRejects(
      () => store.put({ code, data: grant(), expiresAt: IN_A_MINUTE }),
      InvalidRecordError,
    );
    assertEquals(error.field, "code");
    assert(error.message.includes("16 to 512"), error.message);
    assert(!error.message.includes(code), "the message holds no code");
    assertEquals(await store.take(code), null);
  }
  assertEquals(queries, 0, "no query for a short code, put or take");
  assertEquals(await storedCodes(t), 0);
  const sixteen = randomCode().slice(0, 16);
  await store.put({ code: sixteen, data: grant(), expiresAt: IN_A_MINUTE });
  assertEquals((await store.take(sixteen))?.data.subject, "user-42");
});

Deno.test("`put()` refuses a grant over 64 KiB of JSON (UTF-8 bytes), alone or in a batch of 64, before any query", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });
  // 1.4 MB through fields each within its own bound.
  const context = Object.fromEntries(
    Array.from({ length: 15 }, (_, i) => [`k${i}`, "x".repeat(4096)]),
  );
  const big = (): NewCode => ({
    code: randomCode(),
    expiresAt: IN_A_MINUTE,
    data: grant({
      scope: Array.from({ length: 256 }, () => "s".repeat(4096)),
      context,
    }),
  });
  queries = 0;
  const error = await assertRejects(() => store.put(big()), InvalidRecordError);
  assertEquals(error.field, "data");
  assert(error.message.includes("65536 bytes"), error.message);
  const batch = await Promise.allSettled(
    Array.from({ length: 64 }, () => store.put(big())),
  );
  assert(batch.every((r) => r.status === "rejected"));
  assertEquals(queries, 0);
  assertEquals(await storedCodes(t), 0);

  // The bound is on UTF-8 bytes: 30,000 "é" are 30,000 characters, 60,000
  // bytes, and pass; 33,000 are 66,000 bytes and do not.
  const accents = (n: number) => ({
    a: "é".repeat(Math.min(n, 4096)),
    ...Object.fromEntries(
      Array.from(
        { length: Math.ceil(n / 4096) - 1 },
        (_, i) => [`b${i}`, "é".repeat(Math.min(4096, n - 4096 * (i + 1)))],
      ),
    ),
  });
  await store.put({
    code: randomCode(),
    expiresAt: IN_A_MINUTE,
    data: grant({ context: accents(30_000) }),
  });
  await assertRejects(
    () =>
      store.put({
        code: randomCode(),
        expiresAt: IN_A_MINUTE,
        data: grant({ context: accents(33_000) }),
      }),
    InvalidRecordError,
    "invalid data",
  );
  assertEquals(await storedCodes(t), 1);
});

Deno.test("a bad grant id is refused by `put()` and `revokeGrant()` alike, with InvalidRecordError, before any query", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });
  const bad = [
    "",
    "g".repeat(1025),
    "g".repeat(4096),
    "grant\0id",
    "grant\tid",
    "grant\r\nid",
    "grant\x1Bid",
    "grant\x7Fid",
    "grant\x80id",
    "grant\x9Fid",
    "\uDC00grant",
  ];
  queries = 0;
  for (const grantId of bad) {
    const put = await assertRejects(
      () =>
        store.put({
          code: randomCode(),
          data: grant({ grantId }),
          expiresAt: IN_A_MINUTE,
        }),
      InvalidRecordError,
    );
    assertEquals(put.field, "data.grantId");
    const revoke = await assertRejects(
      () => store.revokeGrant(grantId),
      InvalidRecordError,
    );
    assertEquals(revoke.field, "grantId");
    assertEquals(revoke.code, "ERR_INVALID_RECORD");
    if (grantId) assert(!revoke.message.includes(grantId), revoke.message);
  }
  for (const value of [undefined, null, 42, ["g"]]) {
    // deno-lint-ignore no-explicit-any
    await assertRejects(() => store.revokeGrant(value as any), TypeError);
  }
  assertEquals(queries, 0, "no bad grant id reaches the database");
  assertEquals(await storedCodes(t), 0);

  // At the bound and beyond ASCII: stored, and revoked by the same id.
  for (const grantId of ["g".repeat(1024), "grant é 🔑 ö", "a"]) {
    const code = randomCode();
    await store.put({ code, data: grant({ grantId }), expiresAt: IN_A_MINUTE });
    assertEquals(await store.revokeGrant(grantId), 1);
    assertEquals(await store.take(code), null);
  }
});
