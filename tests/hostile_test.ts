/**
 * Hostile and malformed input, named one by one: what an attacker at the
 * token endpoint or a buggy caller of `put` might send.
 */

import {
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStrictEquals,
} from "@std/assert";
import { createCodeStore, InvalidRecordError } from "../mod.ts";
import {
  grant,
  IN_A_MINUTE,
  randomCode,
  storedCodes,
  testDatabase,
} from "./support/database.ts";

Deno.test("`take()` answers null to empty, short, huge, NUL, lone-surrogate, non-NFC and SQL-looking strings", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });
  const issued = randomCode();
  await store.put({ code: issued, data: grant(), expiresAt: IN_A_MINUTE });

  queries = 0;
  const impossible = [
    "",
    "' OR '1'='1",
    "%",
    "a".repeat(1 << 20),
    "\0",
    `${issued}\0`,
    "\uD800",
    `${issued.slice(0, -1)}\uDFFF`,
    "e\u0301", // non-NFC (decomposed é)
    "\u00e9",
    issued.normalize("NFD") + "\u0301",
    `${issued}\n`,
    "\t",
  ];
  for (const code of impossible) {
    assertStrictEquals(await store.take(code), null);
  }
  assertEquals(queries, 0, "impossible codes never reach the database");

  const sqlLooking = [
    // At least 16 characters each, as a code must be to reach the database.
    "' OR '1'='1' OR ''='",
    "'; DROP TABLE codes; --",
    `${issued}' OR 'x'='x`,
    "%".repeat(16),
    "_".repeat(16),
    "*".repeat(16),
    "$1".repeat(8),
    "\\".repeat(16),
    '"'.repeat(16),
    "' UNION SELECT * FROM pg_authid --",
  ];
  for (const code of sqlLooking) {
    assertStrictEquals(await store.take(code), null);
  }
  assertEquals(queries, sqlLooking.length, "one parameterised query each");
  console.log(
    `hostile takes: ${impossible.length + sqlLooking.length} named cases`,
  );
  // The issued code survived all of it, and is still redeemable once.
  assertEquals((await store.take(issued))?.data.subject, "user-42");
  assertStrictEquals(await store.take(issued), null);
});

Deno.test("`put()` refuses __proto__, constructor, cyclic and non-JSON values without polluting anything", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });
  queries = 0;
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const cyclicArray: unknown[] = [];
  cyclicArray.push(cyclicArray);
  const polluted = JSON.parse(
    '{"clientId":"c","subject":"s","redirectUri":"https://c.example/",' +
      '"scope":[],"codeChallenge":"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",' +
      '"codeChallengeMethod":"S256","__proto__":{"isAdmin":true}}',
  );
  const cases: [string, unknown, unknown?][] = [
    ["data.__proto__", polluted],
    ["data.constructor", { ...grant(), constructor: { prototype: {} } }],
    ["data.claims", grant({ claims: JSON.parse('{"__proto__":{"x":1}}') })],
    [
      "data.claims",
      grant({ claims: { constructor: { prototype: { x: 1 } } } }),
    ],
    ["data.claims", grant({ claims: { a: [{ prototype: 1 }] } })],
    ["data.claims", grant({ claims: cyclic })],
    ["data.claims", grant({ claims: { list: cyclicArray } })],
    ["data.claims", grant({ claims: { f: () => "pwned" } })],
    ["data.claims", grant({ claims: { big: 10n } })],
    ["data.claims", grant({ claims: { u: undefined } })],
    ["data.claims", grant({ claims: { n: NaN } })],
    ["data.claims", grant({ claims: { d: new Date() } })],
    ["data.claims", grant({ claims: { s: Symbol("x") } })],
    [
      "data.scope",
      grant({ scope: Array.from({ length: 1_000_000 }, () => "a") }),
    ],
    ["data.resource", grant({ resource: new Array(100_000) })],
    ["data.subject", grant({ subject: "s".repeat(10 * 1024 * 1024) })],
    ["data.claims", grant({ claims: { blob: "x".repeat(5000) } })],
    [
      "data.claims",
      grant({ claims: { wide: Array.from({ length: 20_000 }, (_, i) => i) } }),
    ],
    [
      "data.claims",
      grant({ claims: JSON.parse("[".repeat(100) + "]".repeat(100)) }),
    ],
    ["code", grant(), "x".repeat(1 << 20)],
  ];
  for (const [field, data, code = randomCode()] of cases) {
    const error = await assertRejects(
      // deno-lint-ignore no-explicit-any
      () => store.put({ code, data, expiresAt: IN_A_MINUTE } as any),
      InvalidRecordError,
    );
    assertEquals(error.field, field, error.message);
  }
  assertEquals(queries, 0, "every rejection came before any query");
  console.log(`hostile puts: ${cases.length} named cases rejected`);
  const probe: Record<string, unknown> = {};
  assertEquals(probe.isAdmin, undefined);
  assertEquals(probe.x, undefined);
  assertEquals(Object.getPrototypeOf(probe), Object.prototype);
  assertEquals(await storedCodes(t), 0);
});

Deno.test("`put()` with a getter that changes its answer stores what was validated", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  let reads = 0;
  const data = {
    ...grant(),
    get subject() {
      return reads++ === 0 ? "first-read" : "second-read";
    },
  };
  const code = randomCode();
  await store.put({ code, data, expiresAt: IN_A_MINUTE });
  assertEquals(reads, 1, "each field is read once");
  const entry = await store.take(code);
  assertEquals(entry?.data.subject, "first-read");
});

Deno.test("a rejected `put()` leaves no trace a later valid one could collide with", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const code = randomCode();
  const error = await assertRejects(() =>
    store.put({ code, data: grant({ scope: "openid" }), expiresAt: 1 })
  );
  assertInstanceOf(error, InvalidRecordError);
  await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
  assertEquals((await store.take(code))?.data.scope, ["openid", "profile"]);
});

Deno.test("`put()` refuses an array whose own iterator would yield more than it holds", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });
  queries = 0;
  const sneaky = () =>
    Object.defineProperty([], Symbol.iterator, {
      value: function* () {
        for (let i = 0; i < 100_000; i++) yield `s${i}`;
      },
    });
  const sparse: string[] = [];
  sparse[2] = "openid";
  for (
    const [data, field] of [
      [grant({ scope: sneaky() }), "data.scope"],
      [grant({ resource: sneaky() }), "data.resource"],
      [grant({ claims: { list: sneaky() } }), "data.claims"],
      [grant({ scope: sparse }), "data.scope"],
    ] as const
  ) {
    const error = await assertRejects(() =>
      store.put({ code: randomCode(), data, expiresAt: IN_A_MINUTE })
    );
    assertInstanceOf(error, InvalidRecordError);
    assertEquals(error.field, field);
  }
  assertEquals(queries, 0, "no query was sent");
});
