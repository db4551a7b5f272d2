import {
  assert,
  assertEquals,
  assertFalse,
  assertInstanceOf,
  assertRejects,
  assertStrictEquals,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import postgres, { type Sql } from "../tools/postgres.ts";
import {
  type CodeEntry,
  createCodeStore,
  DuplicateCodeError,
  hashCode,
  InvalidRecordError,
  migrate,
  MissingRepositoryError,
  purgeExpired,
} from "../mod.ts";
import {
  connect,
  end,
  grant,
  IN_A_MINUTE,
  type PoolOptions,
  randomCode,
  statementCounter,
  type TestDatabase,
  testDatabase,
} from "./support/database.ts";

function normalised(data: ReturnType<typeof grant>) {
  return {
    nonce: null,
    dpopJkt: null,
    claims: {},
    resource: [],
    grantId: null,
    context: {},
    ...data,
  };
}

async function count({ sql, table }: TestDatabase): Promise<number> {
  const [{ n }] = await sql<[{ n: number }]>`select count(*)::int as n from ${
    sql(table)
  }`;
  return n;
}

Deno.test("`take()` returns the exact entry `put()` stored, then null", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const store = createCodeStore(sql, { table: t.table });
  const code = randomCode();
  const data = grant();
  await store.put({ code, data, expiresAt: IN_A_MINUTE });

  const entry = await store.take(code);
  assertEquals(entry, {
    codeHash: hashCode(code),
    data: normalised(data),
    expiresAt: IN_A_MINUTE,
  });
  assertStrictEquals(await store.take(code), null);
  assertEquals(await count(t), 0);
});

Deno.test("`take()` round-trips every optional field", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const store = createCodeStore(sql, { table: t.table });
  const code = randomCode();
  const data = grant({
    scope: [],
    nonce: "n-0S6_WzA2Mj",
    dpopJkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
    claims: {
      given_name: "Ada",
      "ünïcödé ключ": ["é", 1.5, -2, 0, true, null, { deep: { deeper: [] } }],
      amr: ["pwd", "otp"],
    },
    resource: ["https://api.example.com/", "urn:example:resource"],
  });
  await store.put({ code, data, expiresAt: 0 });
  const entry = await store.take(code);
  assertEquals(entry?.data, normalised(data));
  assertEquals(entry?.expiresAt, 0);
});

Deno.test("`take()` returns null for a code never issued", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const store = createCodeStore(sql, { table: t.table });
  await store.put({
    code: randomCode(),
    data: grant(),
    expiresAt: IN_A_MINUTE,
  });
  assertStrictEquals(await store.take(randomCode()), null);
  assertEquals(await count(t), 1);
});

Deno.test("`take()` consumes and returns an expired code", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const store = createCodeStore(sql, { table: t.table });
  const code = randomCode();
  const expiresAt = Math.floor(Date.now() / 1000) - 3600;
  await store.put({ code, data: grant(), expiresAt });
  const entry = await store.take(code);
  assertEquals(entry?.expiresAt, expiresAt);
  assertStrictEquals(await store.take(code), null);
});

Deno.test("`put()` of a duplicate code throws and leaves the original row unchanged", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const store = createCodeStore(sql, { table: t.table });
  const code = randomCode();
  await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
  const before = await sql`select * from ${sql(t.table)}`;

  const error = await assertRejects(
    () =>
      store.put({
        code,
        data: grant({ subject: "attacker" }),
        expiresAt: IN_A_MINUTE + 600,
      }),
    DuplicateCodeError,
  );
  assertEquals(error.code, "ERR_DUPLICATE_CODE");
  assertEquals(error.name, "DuplicateCodeError");
  assertEquals(error.cause, undefined);
  assertEquals(await sql`select * from ${sql(t.table)}`, before);
  assertNoSecret(error, [code, hashCode(code)]);
});

Deno.test("`put()` stores only the hash: the code is in no column", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const store = createCodeStore(sql, { table: t.table });
  const code = randomCode();
  await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
  const [{ row }] = await sql<[{ row: string }]>`
    select row_to_json(c)::text as row from ${sql(t.table)} as c
  `;
  assertFalse(row.includes(code));
  assert(row.includes(hashCode(code)));
});

Deno.test("`put()` rejects every invalid record with InvalidRecordError and inserts nothing", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const store = createCodeStore(sql, { table: t.table });
  const code = randomCode();
  const valid = grant({
    nonce: "n",
    dpopJkt: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
    claims: {},
    resource: ["https://api.example.com/"],
  });
  const without = (key: string) =>
    Object.fromEntries(Object.entries(grant()).filter(([k]) => k !== key));
  const notString = [undefined, null, 42, true, {}, [], ["x"]];

  const cases: [string, unknown][] = [
    ["record", null],
    ["record", "a string"],
    ["record", [code]],
    ["code", { data: valid, expiresAt: IN_A_MINUTE }],
    ["code", { code: "", data: valid, expiresAt: IN_A_MINUTE }],
    ["code", { code: 42, data: valid, expiresAt: IN_A_MINUTE }],
    ["code", { code: "a".repeat(513), data: valid, expiresAt: IN_A_MINUTE }],
    ["code", { code: "x".repeat(15), data: valid, expiresAt: IN_A_MINUTE }],
    ["code", { code: "tab\there-0123456789", data: valid, expiresAt: 1 }],
    ["code", { code: "ünicode-0123456789", data: valid, expiresAt: 1 }],
    ["extra", { code, data: valid, expiresAt: IN_A_MINUTE, extra: 1 }],
    ["data", { code, expiresAt: IN_A_MINUTE }],
    ["data", { code, data: "grant", expiresAt: IN_A_MINUTE }],
    ["data.unknown", { code, data: { ...valid, unknown: 1 }, expiresAt: 1 }],
  ];
  for (
    const key of [
      "clientId",
      "subject",
      "redirectUri",
      "scope",
      "codeChallenge",
      "codeChallengeMethod",
    ]
  ) {
    cases.push([`data.${key}`, { code, data: without(key), expiresAt: 1 }]);
  }
  for (const key of ["clientId", "subject", "redirectUri", "codeChallenge"]) {
    for (const value of [...notString, ""]) {
      cases.push([`data.${key}`, {
        code,
        data: { ...valid, [key]: value },
        expiresAt: 1,
      }]);
    }
  }
  for (const key of ["nonce", "dpopJkt"]) {
    for (const value of [42, true, {}, [], ""]) {
      cases.push([`data.${key}`, {
        code,
        data: { ...valid, [key]: value },
        expiresAt: 1,
      }]);
    }
  }
  const badArrays: [string, unknown][] = [
    ["data.scope", "openid profile"],
    ["data.scope", null],
    ["data.scope[1]", ["openid", 42]],
    ["data.scope[0]", ["has space"]],
    ["data.scope[0]", [""]],
    ["data.resource", "https://api.example.com/"],
    ["data.resource[0]", ["relative/path"]],
    ["data.resource[0]", ["https://api.example.com/#fragment"]],
    ["data.resource[0]", [42]],
  ];
  for (const [field, value] of badArrays) {
    const key = field.slice(5).replace(/\[\d+\]$/, "");
    cases.push([field, {
      code,
      data: { ...valid, [key]: value },
      expiresAt: 1,
    }]);
  }
  for (const method of ["plain", "s256", "S384", "", null, 256]) {
    cases.push([
      "data.codeChallengeMethod",
      { code, data: { ...valid, codeChallengeMethod: method }, expiresAt: 1 },
    ]);
  }
  for (
    const challenge of [
      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c", // 42
      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cMM", // 44
      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM", // base64, not base64url
    ]
  ) {
    cases.push([
      "data.codeChallenge",
      { code, data: { ...valid, codeChallenge: challenge }, expiresAt: 1 },
    ]);
  }
  for (const claims of [[], "{}", 42, new Map(), new Date(0)]) {
    cases.push(["data.claims", {
      code,
      data: { ...valid, claims },
      expiresAt: 1,
    }]);
  }
  cases.push(["data.redirectUri", {
    code,
    data: { ...valid, redirectUri: "/callback" },
    expiresAt: 1,
  }]);
  cases.push(["data.redirectUri", {
    code,
    data: { ...valid, redirectUri: "https://client.example.org/cb#frag" },
    expiresAt: 1,
  }]);
  for (
    const expiresAt of [
      undefined,
      null,
      "1900000000",
      1.5,
      NaN,
      Infinity,
      -1,
      -Infinity,
      253_402_300_800,
      2 ** 53,
    ]
  ) {
    cases.push(["expiresAt", { code, data: valid, expiresAt }]);
  }

  for (const [field, input] of cases) {
    const error = await assertRejects(
      // deno-lint-ignore no-explicit-any
      () => store.put(input as any),
      InvalidRecordError,
      undefined,
      `expected ${field} to be rejected`,
    );
    assertEquals(error.field, field, error.message);
    assertEquals(error.code, "ERR_INVALID_RECORD");
    assertNoSecret(error, [code]);
  }
  assertEquals(await count(t), 0, "nothing may be inserted");
  console.log(`invalid records: ${cases.length} named cases rejected`);
  // The valid record itself is accepted: the cases failed for their own fault.
  await store.put({ code, data: valid, expiresAt: 1 });
  assertEquals(await count(t), 1);
});

Deno.test("`take()` rejects a non-string with TypeError", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const store = createCodeStore(sql, { table: t.table });
  for (const value of [undefined, null, 42, {}, ["code"], new String("code")]) {
    // deno-lint-ignore no-explicit-any
    await assertRejects(() => store.take(value as any), TypeError);
  }
});

Deno.test("`take()` answers null without a query for a string no server could issue", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });
  queries = 0;
  for (
    const code of [
      "",
      "a".repeat(15),
      randomCode().slice(0, 15),
      "a".repeat(513),
      "a".repeat(1 << 20),
      "nul\0",
      "\uD800",
    ]
  ) {
    assertStrictEquals(await store.take(code), null);
  }
  assertEquals(queries, 0);
  const statements = await statementCounter(t);
  await store.take(randomCode());
  assertEquals(await statements(), 1, "one statement per take");
});

Deno.test("`createCodeStore()` without a database throws a TypeError at once", () => {
  for (const repo of [undefined, null, {}, "postgres://localhost"]) {
    try {
      // deno-lint-ignore no-explicit-any
      createCodeStore(repo as any);
      throw new Error(`accepted ${String(repo)}`);
    } catch (error) {
      assertInstanceOf(error, TypeError);
    }
  }
});

Deno.test("a repository function yielding no database fails closed on every call", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const yields: unknown[] = [undefined, null, Promise.resolve(sql), {}, 42];
  let calls = 0;
  const store = createCodeStore(() => {
    // deno-lint-ignore no-explicit-any
    return yields[calls++ % yields.length] as any;
  }, { table: t.table });
  const code = randomCode();
  for (let i = 0; i < yields.length; i++) {
    const error = await assertRejects(
      () => store.put({ code, data: grant(), expiresAt: IN_A_MINUTE }),
      MissingRepositoryError,
    );
    assertEquals(error.code, "ERR_MISSING_REPOSITORY");
  }
  for (let i = 0; i < yields.length; i++) {
    await assertRejects(() => store.take(code), MissingRepositoryError);
  }
  assertEquals(calls, 2 * yields.length, "called on every operation");
  assertEquals(await count(t), 0, "nothing written");
});

Deno.test("a repository function is called on every operation, so the pool can come later", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  let pool: Sql | undefined;
  const store = createCodeStore(() => pool, { table: t.table });
  const code = randomCode();
  await assertRejects(
    () => store.put({ code, data: grant(), expiresAt: IN_A_MINUTE }),
    MissingRepositoryError,
  );
  pool = sql;
  await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
  pool = undefined;
  await assertRejects(() => store.take(code), MissingRepositoryError);
  pool = sql;
  assert(await store.take(code));
});

Deno.test("the store works with `prepare: false`, `fetch_types: false`, `transform: postgres.camel` and any value transform: the entry comes back as stored", async () => {
  const variants: PoolOptions[] = [
    { prepare: false },
    { fetch_types: false },
    { transform: postgres.camel },
    { prepare: false, fetch_types: false, transform: postgres.camel },
    // A value transform that would change every string it sees.
    {
      transform: {
        value: {
          from: (value: unknown) =>
            typeof value === "string" ? value.toUpperCase() : value,
        },
      },
    },
  ];
  for (const options of variants) {
    await using t = await testDatabase(options);
    const store = createCodeStore(t.sql, { table: t.table });
    const code = randomCode();
    const data = grant({
      claims: { snake_case_claim: { nested_key: 1 } },
      resource: ["https://api.example.com/"],
    });
    await store.put({ code, data, expiresAt: IN_A_MINUTE });
    const entry: CodeEntry | null = await store.take(code);
    assertEquals(entry?.data, normalised(data));
  }
});

Deno.test("the store works on a pool whose column transform renames identifiers: the store's own names are never transformed", async () => {
  await using t = await testDatabase();
  const sql = connect({
    transform: { column: { to: postgres.toCamel, from: postgres.toCamel } },
  });
  try {
    await migrate(sql, { table: t.table });
    const store = createCodeStore(sql, { table: t.table });
    const code = randomCode();
    const data = grant({ grantId: "family-1" });
    await store.put({ code, data, expiresAt: IN_A_MINUTE });
    assertEquals((await store.take(code))?.data, normalised(data));
    assert(await store.spent(code));
    await store.put({ code: randomCode(), data, expiresAt: 1 });
    assertEquals(await store.revokeGrant("family-1"), 1);
    assertEquals(await purgeExpired(sql, { table: t.table }), {
      codes: 0,
      tombstones: 0,
    });
  } finally {
    await end(sql);
  }
});

Deno.test("`createCodeStore()` refuses a driver that lacks what the store relies on, at creation or at first use", async () => {
  // Looks like a postgres.js Sql (a function with unsafe, begin, json),
  // but is not one: no connection settings, queries without state.
  const fake = Object.assign(() => ({ then() {} }), {
    unsafe() {},
    begin() {},
    json() {},
  }) as unknown as Sql;
  assertStringIncludes(
    assertThrows(() => createCodeStore(fake), TypeError).message,
    "postgres.js 3.4",
  );
  const lazy = createCodeStore(() => fake);
  await assertRejects(() => lazy.take(randomCode()), TypeError);
});

/** Neither the message, stack nor any own property holds a secret. */
function assertNoSecret(error: Error, secrets: string[]) {
  const texts = [error.message, error.stack ?? "", JSON.stringify(error)];
  for (const key of Reflect.ownKeys(error)) {
    texts.push(String((error as unknown as Record<PropertyKey, unknown>)[key]));
  }
  for (const secret of secrets) {
    for (const text of texts) assertFalse(text.includes(secret));
  }
}

Deno.test("`createCodeStore()` options: a wrong type is a TypeError, a number out of range a RangeError, an unknown option a TypeError", async () => {
  await using t = await testDatabase();
  const refuses = (options: unknown, kind: typeof TypeError) => {
    try {
      // deno-lint-ignore no-explicit-any
      createCodeStore(t.sql, { table: t.table, ...(options as any) });
    } catch (error) {
      assertInstanceOf(error, kind, JSON.stringify(options));
      return (error as Error).message;
    }
    throw new Error(`accepted ${JSON.stringify(options)}`);
  };
  for (const timeoutMs of ["1000", null, {}, true]) {
    refuses({ timeoutMs }, TypeError);
  }
  // No Infinity: a statement that never settles would hold a slot for good.
  for (const timeoutMs of [0, -1, NaN, 2 ** 31, -Infinity, Infinity]) {
    refuses({ timeoutMs }, RangeError);
  }
  for (const tombstoneRetentionSeconds of ["60", null]) {
    refuses({ tombstoneRetentionSeconds }, TypeError);
  }
  for (
    const tombstoneRetentionSeconds of [0, -1, 1.5, NaN, 400 * 86_400 * 30]
  ) {
    refuses({ tombstoneRetentionSeconds }, RangeError);
  }
  // The names before 0.2 carried no unit: refused, pointing to the new one.
  assertStringIncludes(refuses({ timeout: 5000 }, TypeError), "timeoutMs");
  assertStringIncludes(
    refuses({ tombstoneRetention: 60 }, TypeError),
    "tombstoneRetentionSeconds",
  );
  refuses({ tabel: "x" }, TypeError);
  createCodeStore(t.sql, { table: t.table, timeoutMs: 1 });
  for (const timeoutMs of [5000, 2 ** 31 - 1]) {
    const store = createCodeStore(t.sql, { table: t.table, timeoutMs });
    const code = randomCode();
    await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
    assert(await store.take(code));
  }
});
