import {
  assertEquals,
  assertFalse,
  assertInstanceOf,
  assertThrows,
} from "@std/assert";
import {
  type CodeEntry,
  type CodeRow,
  CodeStoreError,
  DuplicateCodeError,
  fromRecord,
  hashCode,
  InvalidRecordError,
  MissingRepositoryError,
  toRecord,
} from "../mod.ts";
import { grant } from "./support/database.ts";

const HASH = "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0";

function entry(data: Record<string, unknown> = {}, expiresAt = 1_900_000_000) {
  return { codeHash: HASH, expiresAt, data: grant(data) } as CodeEntry;
}

function rejects(value: unknown, field: string) {
  const error = assertThrows(
    () => fromRecord(value as CodeEntry),
    InvalidRecordError,
  );
  assertEquals(error.field, field, error.message);
  return error;
}

Deno.test("`toRecord(fromRecord(e))` equals `e` with optional fields normalised", () => {
  const bare = entry();
  assertEquals(toRecord(fromRecord(bare)), {
    ...bare,
    data: {
      ...bare.data,
      nonce: null,
      dpopJkt: null,
      claims: {},
      resource: [],
      grantId: null,
      context: {},
    },
  });
  const full = entry({
    nonce: "abc",
    dpopJkt: HASH,
    claims: { a: [1, "two", null, { b: false }] },
    resource: ["https://rs.example/"],
    grantId: "family-7",
    context: { acr: "1", amr: ["pwd"] },
  });
  assertEquals(toRecord(fromRecord(full)), full);
});

Deno.test("`fromRecord()` maps every field to its column", () => {
  const row = fromRecord(entry({ nonce: "n", resource: ["urn:x:y"] }));
  assertEquals(
    row,
    {
      code_hash: HASH,
      client_id: "s6BhdRkqt3",
      subject: "user-42",
      redirect_uri: "https://client.example.org/cb",
      scope: ["openid", "profile"],
      code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
      code_challenge_method: "S256",
      nonce: "n",
      dpop_jkt: null,
      claims: {},
      resource: ["urn:x:y"],
      expires_at: new Date(1_900_000_000_000),
      grant_id: null,
      context: {},
    } satisfies CodeRow,
  );
});

Deno.test("`fromRecord()` copies: later changes to the input do not reach the row", () => {
  const scope = ["openid"];
  const claims = { roles: ["user"] };
  const row = fromRecord(entry({ scope, claims }));
  scope.push("admin");
  claims.roles.push("admin");
  assertEquals(row.scope, ["openid"]);
  assertEquals(row.claims, { roles: ["user"] });
});

Deno.test("`fromRecord()` rejects a missing or unknown field, never defaulting", () => {
  rejects({ data: grant(), expiresAt: 1 }, "codeHash");
  rejects({ codeHash: HASH, expiresAt: 1 }, "data");
  rejects({ codeHash: HASH, data: grant() }, "expiresAt");
  rejects({ ...entry(), extra: true }, "extra");
  rejects({ ...entry(), [Symbol("s")]: 1 }, "Symbol(s)");
  const { codeChallengeMethod: _, ...withoutMethod } = grant();
  rejects(
    { codeHash: HASH, expiresAt: 1, data: withoutMethod },
    "data.codeChallengeMethod",
  );
  rejects(entry({ codeChallengeMethod: "plain" }), "data.codeChallengeMethod");
  rejects(entry({ codeHash: "x" }), "data.codeHash");
  rejects({ ...entry(), codeHash: HASH.slice(1) }, "codeHash");
});

Deno.test("`fromRecord()` reads only own fields: a polluted prototype supplies nothing", () => {
  const { codeChallengeMethod: _, ...withoutMethod } = grant();
  const proto = Object.prototype as Record<string, unknown>;
  proto.codeChallengeMethod = "S256";
  try {
    rejects(
      { codeHash: HASH, expiresAt: 1, data: withoutMethod },
      "data.codeChallengeMethod",
    );
  } finally {
    delete proto.codeChallengeMethod;
  }
  rejects(Object.create(entry()), "record");
  rejects({ ...entry(), data: Object.create(grant()) }, "data");
});

Deno.test("`fromRecord()` refuses claims JSON cannot hold exactly", () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const deep = JSON.parse("[".repeat(40) + "]".repeat(40));
  const cases: unknown[] = [
    JSON.parse('{"__proto__": {"polluted": true}}'),
    { constructor: { prototype: { polluted: true } } },
    { nested: [{ prototype: 1 }] },
    cyclic,
    { f: () => 1 },
    { big: 1n },
    { u: undefined },
    { n: NaN },
    { i: -Infinity },
    { s: Symbol("x") },
    { [Symbol("k")]: 1 },
    { d: new Date(0) },
    { m: new Map() },
    { nul: "a\0b" },
    { "key\0": 1 },
    { lone: "\uD800" },
    { deep },
    { wide: Array.from({ length: 10_001 }, () => 0) },
    { long: "x".repeat(4097) },
    { big: Array.from({ length: 40 }, () => "x".repeat(4000)) },
    [],
    new (class Claims {})(),
  ];
  for (const claims of cases) {
    rejects(entry({ claims }), "data.claims");
  }
  assertEquals(({} as Record<string, unknown>).polluted, undefined);
  // Shared, non-cyclic references are fine.
  const shared = { x: 1 };
  assertEquals(
    fromRecord(entry({ claims: { a: shared, b: shared } })).claims,
    { a: { x: 1 }, b: { x: 1 } },
  );
});

Deno.test("`fromRecord()` bounds strings and arrays", () => {
  rejects(entry({ subject: "s".repeat(4097) }), "data.subject");
  rejects(
    entry({ scope: Array.from({ length: 257 }, (_, i) => `s${i}`) }),
    "data.scope",
  );
  rejects(
    entry({
      resource: Array.from({ length: 65 }, (_, i) => `urn:r:${i}`),
    }),
    "data.resource",
  );
  rejects(entry({ subject: "a\0b" }), "data.subject");
  rejects(entry({ nonce: "\uDC00" }), "data.nonce");
  rejects(entry({ clientId: "client\u00e9" }), "data.clientId");
});

Deno.test("`InvalidRecordError` names the field, never the value", () => {
  const secret = "do-not-print-me-" + crypto.randomUUID();
  for (
    const error of [
      rejects(entry({ redirectUri: `relative/${secret}` }), "data.redirectUri"),
      rejects(entry({ clientId: `${secret}\n` }), "data.clientId"),
      rejects(entry({ claims: { [secret]: () => 1 } }), "data.claims"),
    ]
  ) {
    assertFalse(error.message.includes(secret));
    assertFalse(JSON.stringify(error).includes(secret));
  }
});

Deno.test("`toRecord()` refuses a row that breaks the schema", () => {
  const row = fromRecord(entry());
  const bad: [Partial<Record<keyof CodeRow, unknown>>, string][] = [
    [{ code_challenge_method: "plain" }, "data.codeChallengeMethod"],
    [{ scope: "{openid}" }, "data.scope"],
    [{ expires_at: "2030-01-01T00:00:00Z" }, "expiresAt"],
    [{ expires_at: new Date(1.5) }, "expiresAt"],
    [{ expires_at: new Date(NaN) }, "expiresAt"],
    [{ client_id: "" }, "data.clientId"],
  ];
  for (const [change, field] of bad) {
    const error = assertThrows(
      () => toRecord({ ...row, ...change } as CodeRow),
      InvalidRecordError,
    );
    assertEquals(error.field, field);
  }
});

Deno.test("`hashCode()` is base64url SHA-256 of the UTF-8 code, 43 characters", () => {
  // FIPS 180-2 test vectors, re-encoded as base64url without padding.
  assertEquals(
    hashCode("abc"),
    "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0",
  );
  assertEquals(
    hashCode(""),
    "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
  );
  for (const code of ["a", "x".repeat(10_000), "é", "🔑"]) {
    const hash = hashCode(code);
    assertEquals(hash.length, 43);
    assertEquals(/^[A-Za-z0-9_-]{43}$/.test(hash), true);
  }
  for (const value of [undefined, null, 1, {}, new Uint8Array(1)]) {
    // deno-lint-ignore no-explicit-any
    assertThrows(() => hashCode(value as any), TypeError);
  }
});

Deno.test("errors have a stable `code` and `name` equal to their class", () => {
  const cases: [CodeStoreError, string, string][] = [
    [new DuplicateCodeError(), "DuplicateCodeError", "ERR_DUPLICATE_CODE"],
    [
      new InvalidRecordError("data.scope", "must be an array"),
      "InvalidRecordError",
      "ERR_INVALID_RECORD",
    ],
    [
      new MissingRepositoryError("returned undefined"),
      "MissingRepositoryError",
      "ERR_MISSING_REPOSITORY",
    ],
  ];
  for (const [error, name, code] of cases) {
    assertInstanceOf(error, CodeStoreError);
    assertInstanceOf(error, Error);
    assertEquals(error.name, name);
    assertEquals(error.code, code);
    assertEquals((error.constructor as unknown as { code: string }).code, code);
  }
});
