/**
 * fast-check arbitraries: valid records, and records with exactly one field
 * broken, labelled with the field `InvalidRecordError` must name.
 *
 * @module
 */

import fc from "fast-check";
import type { CodeEntry, CodeRecord, GrantData, JsonValue } from "../../mod.ts";

const base64url43 = fc.stringMatching(/^[A-Za-z0-9_-]{43}$/);
const vschar = fc.string({ minLength: 1, maxLength: 64 }); // U+0020..U+007E
const text = fc.string({ unit: "grapheme", minLength: 1, maxLength: 64 });
const CONTROL = /\p{Cc}/u;
const grantId = fc.oneof(
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 64 }),
  fc.string({ minLength: 1000, maxLength: 1024 }),
).filter((id) => !CONTROL.test(id));
const scopeToken = fc.stringMatching(/^[\x21\x23-\x5B\x5D-\x7E]{1,20}$/);
const uri = fc.webUrl({ withQueryParameters: true });
const withoutNegativeZero = (value: JsonValue): JsonValue =>
  Object.is(value, -0)
    ? 0
    : Array.isArray(value)
    ? value.map(withoutNegativeZero)
    : value !== null && typeof value === "object"
    ? Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, withoutNegativeZero(v)]),
    )
    : value;
const FORBIDDEN = new Set(["__proto__", "constructor", "prototype"]);
const claimKey = fc.string({ maxLength: 12 }).filter((k) => !FORBIDDEN.has(k));
const claims = fc.dictionary(claimKey, fc.jsonValue({ maxDepth: 3 }), {
  maxKeys: 6,
}).map((o) =>
  withoutNegativeZero(o as unknown as JsonValue) as Record<string, JsonValue>
)
  .filter((o) =>
    !JSON.stringify(o).match(/"(__proto__|constructor|prototype)":/)
  );

/** A valid grant, with any mix of optional fields. */
export const grantData: fc.Arbitrary<GrantData> = fc.record({
  clientId: vschar,
  subject: text,
  redirectUri: uri,
  scope: fc.array(scopeToken, { maxLength: 8 }),
  codeChallenge: base64url43,
  codeChallengeMethod: fc.constant("S256" as const),
  nonce: fc.oneof(text, fc.constant(null)),
  dpopJkt: fc.oneof(base64url43, fc.constant(null)),
  claims,
  resource: fc.array(uri, { maxLength: 3 }),
  grantId: fc.oneof(grantId, fc.constant(null)),
}, {
  requiredKeys: [
    "clientId",
    "subject",
    "redirectUri",
    "scope",
    "codeChallenge",
    "codeChallengeMethod",
  ],
});

/** A valid expiry. */
export const expiresAt: fc.Arbitrary<number> = fc.integer({
  min: 0,
  max: 253_402_300_799,
});

/** A valid record. */
export const codeEntry: fc.Arbitrary<CodeRecord> = fc.record({
  codeHash: base64url43,
  data: grantData,
  expiresAt,
});

/** `entry` as `take` returns it: optional fields normalised. */
export function normalised(entry: CodeRecord): CodeEntry {
  return {
    ...entry,
    data: {
      ...entry.data,
      nonce: entry.data.nonce ?? null,
      dpopJkt: entry.data.dpopJkt ?? null,
      claims: entry.data.claims ?? {},
      resource: entry.data.resource ?? [],
      grantId: entry.data.grantId ?? null,
      context: entry.data.context ?? {},
    },
  };
}

const notString = fc.oneof(
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.object(),
  fc.array(fc.string()),
);
const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff })
  .map((c) => `a${String.fromCharCode(c)}`);
const badText = fc.oneof(
  notString,
  fc.constant(""),
  fc.string().map((s) => `${s}\0`),
  loneSurrogate,
  fc.constant("x".repeat(4097)),
);
const badBase64url43 = fc.oneof(
  notString,
  fc.stringMatching(/^[A-Za-z0-9_-]{0,42}$/),
  fc.stringMatching(/^[A-Za-z0-9_-]{44,60}$/),
  fc.stringMatching(/^[A-Za-z0-9_-]{42}[+/=.~ ]$/),
);
const badUri = fc.oneof(
  badText,
  fc.stringMatching(/^[a-z]{1,10}(\/[a-z]{1,10}){0,3}$/), // relative
  uri.map((u) => `${u}#fragment`),
);
const nonJson = fc.oneof(
  fc.constant(undefined),
  fc.constant(NaN),
  fc.constant(Infinity),
  fc.bigInt(),
  fc.func(fc.integer()),
  fc.constant(Symbol("s")),
  fc.date(),
  fc.constant(new Map()),
);

/** For each field, values that must be rejected, and the reported field. */
const broken: Record<string, fc.Arbitrary<unknown>> = {
  clientId: fc.oneof(
    badText,
    fc.string({ unit: "grapheme", minLength: 1 }).filter((s) =>
      /[^\x20-\x7E]/.test(s)
    ),
  ),
  subject: badText,
  redirectUri: badUri,
  scope: fc.oneof(
    fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.object()),
    fc.array(fc.oneof(fc.constant(""), fc.constant("a b"), fc.integer()), {
      minLength: 1,
      maxLength: 3,
    }),
    fc.constant(Array.from({ length: 257 }, (_, i) => `s${i}`)),
  ),
  codeChallenge: badBase64url43,
  codeChallengeMethod: fc.oneof(
    fc.constantFrom("plain", "s256", "S384", "", "S256 ", undefined, null),
    fc.anything().filter((v) => v !== "S256"),
  ),
  nonce: fc.oneof(
    fc.integer(),
    fc.boolean(),
    fc.object(),
    fc.constant(""),
    loneSurrogate,
  ),
  dpopJkt: fc.oneof(fc.integer(), fc.object(), fc.constant(""), badBase64url43)
    .filter((v) => v !== undefined && v !== null),
  claims: fc.oneof(
    fc.oneof(fc.string(), fc.integer(), fc.array(fc.anything())),
    nonJson.map((v) => ({ key: v })),
    nonJson.map((v) => ({ nested: [1, { deeper: v }] })),
    fc.constantFrom("__proto__", "constructor", "prototype").map((k) =>
      JSON.parse(`{"${k}": {"polluted": true}}`)
    ),
  ),
  resource: fc.oneof(
    fc.oneof(fc.string(), fc.integer(), fc.object()),
    fc.array(badUri, { minLength: 1, maxLength: 2 }),
  ),
  grantId: fc.oneof(
    badText.filter((v) => v !== null && v !== undefined),
    fc.constant("g".repeat(1025)),
    fc.tuple(
      fc.string({ maxLength: 8 }),
      fc.integer({ min: 0, max: 0x9f }).filter((c) => c < 0x20 || c > 0x7e),
      fc.string({ maxLength: 8 }),
    ).map(([a, c, b]) => `${a}${String.fromCharCode(c)}${b}`),
  ),
};

/** A record with one field broken, and the field the error must name. */
export const brokenEntry: fc.Arbitrary<{ entry: unknown; field: string }> = fc
  .oneof(
    ...Object.entries(broken).map(([key, bad]) =>
      fc.tuple(codeEntry, bad).map(([entry, value]) => ({
        entry: { ...entry, data: { ...entry.data, [key]: value } },
        field: `data.${key}`,
      }))
    ),
    fc.tuple(codeEntry, fc.string({ minLength: 1, maxLength: 20 }))
      .filter(([entry, key]) => !(key in entry.data))
      .map(([entry, key]) => ({
        entry: { ...entry, data: { ...entry.data, [key]: 1 } },
        field: `data.${key}`,
      })),
    fc.tuple(
      codeEntry,
      fc.oneof(
        fc.double({ noInteger: true }),
        fc.integer({ max: -1 }),
        fc.maxSafeNat().filter((n) => n > 253_402_300_799),
        fc.constant(NaN),
        fc.string(),
      ),
    ).map(([entry, value]) => ({
      entry: { ...entry, expiresAt: value },
      field: "expiresAt",
    })),
  );
