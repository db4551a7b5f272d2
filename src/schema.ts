/**
 * The schema file: how a {@linkcode CodeEntry} maps to a table row, and the
 * rules every record must meet. Validation fails closed: a missing field, a
 * value of the wrong type, an unknown key or a PKCE method other than `S256`
 * is an {@linkcode InvalidRecordError}, never a default.
 *
 * @module
 */

import { InvalidRecordError } from "./errors.ts";
import { isCodeSyntax, MAX_CODE_LENGTH } from "./hash_code.ts";
import type {
  CodeEntry,
  GrantData,
  JsonObject,
  JsonValue,
  SpentCode,
} from "./types.ts";

/**
 * One row of the codes table: one property per column the store writes and
 * reads, named as the column. (`inserted_at`, set by the server, is
 * bookkeeping and not part of the record.)
 */
export type CodeRow = {
  /** Primary key: the base64url SHA-256 of the code. */
  readonly code_hash: string;
  /** `GrantData.clientId`. */
  readonly client_id: string;
  /** `GrantData.subject`. */
  readonly subject: string;
  /** `GrantData.redirectUri`. */
  readonly redirect_uri: string;
  /** `GrantData.scope` (`text[]`). */
  readonly scope: readonly string[];
  /** `GrantData.codeChallenge`. */
  readonly code_challenge: string;
  /** `GrantData.codeChallengeMethod`; the table allows only `'S256'`. */
  readonly code_challenge_method: "S256";
  /** `GrantData.nonce`, `null` when absent. */
  readonly nonce: string | null;
  /** `GrantData.dpopJkt`, `null` when absent. */
  readonly dpop_jkt: string | null;
  /** `GrantData.claims` (`jsonb`), `{}` when absent. */
  readonly claims: JsonObject;
  /** `GrantData.resource` (`text[]`), `[]` when absent. */
  readonly resource: readonly string[];
  /** `CodeEntry.expiresAt` (`timestamptz`). */
  readonly expires_at: Date;
  /** `GrantData.grantId`, `null` when absent. */
  readonly grant_id: string | null;
};

/** The columns of {@linkcode CodeRow}, in table order. */
export const CODE_COLUMNS: readonly (keyof CodeRow)[] = [
  "code_hash",
  "client_id",
  "subject",
  "redirect_uri",
  "scope",
  "code_challenge",
  "code_challenge_method",
  "nonce",
  "dpop_jkt",
  "claims",
  "resource",
  "expires_at",
  "grant_id",
];

/** Bounds on what a record may hold, so no input can exhaust the server. */
export const LIMITS = {
  /** Characters in any string field, array element or JSON string. */
  text: 4096,
  /** Scope tokens. */
  scope: 256,
  /** Resource indicators. */
  resource: 64,
  /** Nesting depth of `claims`. */
  claimsDepth: 32,
  /** Values (objects, arrays, scalars) in `claims`. */
  claimsValues: 10_000,
  /** Characters of `claims` serialised as JSON. */
  claimsJson: 65_536,
  /** Latest `expiresAt`: 9999-12-31T23:59:59Z. */
  expiresAt: 253_402_300_799,
} as const;

/** {@linkcode GrantData} with every optional field normalised. */
export interface StoredGrantData extends GrantData {
  readonly nonce: string | null;
  readonly dpopJkt: string | null;
  readonly claims: JsonObject;
  readonly resource: readonly string[];
  readonly grantId: string | null;
}

/** A {@linkcode CodeEntry} that passed validation, normalised. */
export interface ValidEntry extends CodeEntry {
  readonly data: StoredGrantData;
}

const ENTRY_KEYS = ["codeHash", "data", "expiresAt"] as const;
const NEW_CODE_KEYS = ["code", "data", "expiresAt"] as const;
const GRANT_KEYS = [
  "clientId",
  "subject",
  "redirectUri",
  "scope",
  "codeChallenge",
  "codeChallengeMethod",
  "nonce",
  "dpopJkt",
  "claims",
  "resource",
  "grantId",
] as const;

// RFC 6749 Appendix A: VSCHAR = %x20-7E (client_id = *VSCHAR, §2.2).
const VSCHAR = /^[\x20-\x7E]+$/;
// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
// 32 bytes in base64url without padding (RFC 4648 §5): an S256 code
// challenge (RFC 7636 §4.2), a SHA-256 JWK thumbprint (RFC 7638, RFC 9449
// §10), or a code hash.
const SHA256_BASE64URL = /^[A-Za-z0-9_-]{43}$/;
// Keys that could reach a prototype if a consumer ever copied claims with
// plain assignment.
const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

/**
 * Maps a record to its row, after validating every field.
 *
 * @param entry The record: the code hash, the grant and the expiry.
 * @returns The row, one property per column, optional fields normalised.
 * @throws {InvalidRecordError} If any field is missing, of the wrong type,
 * out of bounds or unknown; `field` names it (e.g. `"data.scope"`).
 *
 * @example
 * ```ts
 * import { fromRecord, hashCode } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * const row = fromRecord({
 *   codeHash: hashCode("SplxlOBeZQQYbYS6WxSbIA"),
 *   expiresAt: 1_900_000_000,
 *   data: {
 *     clientId: "s6BhdRkqt3",
 *     subject: "user-42",
 *     redirectUri: "https://client.example.org/cb",
 *     scope: ["openid"],
 *     codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
 *     codeChallengeMethod: "S256",
 *   },
 * });
 * assertEquals(row.nonce, null);
 * assertEquals(row.expires_at, new Date(1_900_000_000_000));
 * ```
 */
export function fromRecord(entry: CodeEntry): CodeRow {
  return rowOf(validateEntry(entry));
}

/** The row of an entry that already passed validation. */
export function rowOf({ codeHash, data, expiresAt }: ValidEntry): CodeRow {
  return {
    code_hash: codeHash,
    client_id: data.clientId,
    subject: data.subject,
    redirect_uri: data.redirectUri,
    scope: data.scope,
    code_challenge: data.codeChallenge,
    code_challenge_method: data.codeChallengeMethod,
    nonce: data.nonce,
    dpop_jkt: data.dpopJkt,
    claims: data.claims,
    resource: data.resource,
    expires_at: new Date(expiresAt * 1000),
    grant_id: data.grantId,
  };
}

/**
 * Maps a row back to its record, validating it on the way out as well: a
 * row that breaks the rules (written by other means) is refused rather than
 * handed to the token endpoint.
 *
 * @param row A row of the codes table.
 * @returns The record, with `nonce`/`dpopJkt`/`grantId` `null`, `claims`
 * `{}` and `resource` `[]` when absent.
 * @throws {InvalidRecordError} If the row is not a valid record; `field`
 * names the record field (e.g. `"data.clientId"` for `client_id`).
 *
 * @example
 * ```ts
 * import { fromRecord, toRecord } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * const entry = {
 *   codeHash: "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0",
 *   expiresAt: 1_900_000_000,
 *   data: {
 *     clientId: "s6BhdRkqt3",
 *     subject: "user-42",
 *     redirectUri: "https://client.example.org/cb",
 *     scope: [],
 *     codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
 *     codeChallengeMethod: "S256",
 *   },
 * } as const;
 * const back = toRecord(fromRecord(entry));
 * assertEquals(back.data, {
 *   ...entry.data,
 *   nonce: null,
 *   dpopJkt: null,
 *   claims: {},
 *   resource: [],
 *   grantId: null,
 * });
 * ```
 */
export function toRecord(row: CodeRow): CodeEntry {
  const r = ownFields(row, "", CODE_COLUMNS);
  const expires = r.expires_at;
  const ms = expires instanceof Date ? expires.getTime() : NaN;
  if (!Number.isInteger(ms / 1000)) {
    throw new InvalidRecordError(
      "expiresAt",
      "expires_at must be a valid Date on a whole second",
    );
  }
  return validateEntry({
    codeHash: r.code_hash,
    expiresAt: ms / 1000,
    data: {
      clientId: r.client_id,
      subject: r.subject,
      redirectUri: r.redirect_uri,
      scope: r.scope,
      codeChallenge: r.code_challenge,
      codeChallengeMethod: r.code_challenge_method,
      nonce: r.nonce,
      dpopJkt: r.dpop_jkt,
      claims: r.claims,
      resource: r.resource,
      grantId: r.grant_id,
    },
  });
}

/**
 * Validates a tombstone read from the database (the columns `code_hash`,
 * `client_id`, `subject`, `redirect_uri`, `code_challenge`, `grant_id`
 * and the spending time in epoch seconds, in that order): a row written by
 * other means that breaks the rules is refused like an entry.
 *
 * @throws {InvalidRecordError} On the first rule broken.
 */
export function toSpentCode(values: readonly unknown[]): SpentCode {
  const [codeHash, clientId, subject, redirectUri, challenge, grantId] = values;
  const spentAt = values[6];
  if (
    typeof spentAt !== "number" || !Number.isInteger(spentAt) || spentAt < 0
  ) {
    throw new InvalidRecordError(
      "spentAt",
      "must be an integer number of seconds since the Unix epoch",
    );
  }
  return {
    codeHash: sha256Base64url(codeHash, "codeHash"),
    clientId: text(clientId, "clientId", VSCHAR, "VSCHAR characters"),
    subject: text(subject, "subject"),
    redirectUri: absoluteUri(redirectUri, "redirectUri"),
    codeChallenge: sha256Base64url(challenge, "codeChallenge"),
    grantId: optional(grantId, null, (v) => text(v, "grantId")),
    spentAt,
  };
}

/**
 * Validates a record and returns a normalised copy that shares nothing
 * mutable with the input (so what is stored is what was checked).
 *
 * @throws {InvalidRecordError} On the first rule broken.
 */
export function validateEntry(entry: unknown): ValidEntry {
  const e = ownFields(entry, "", ENTRY_KEYS);
  return {
    codeHash: sha256Base64url(e.codeHash, "codeHash"),
    data: validateGrant(e.data),
    expiresAt: expiry(e.expiresAt),
  };
}

/**
 * Validates the input of `put`: the plaintext code (its grammar only; it is
 * never stored), the grant and the expiry.
 *
 * @throws {InvalidRecordError} On the first rule broken; the message never
 * holds the code.
 */
export function validateNewCode(
  input: unknown,
): { code: string; data: StoredGrantData; expiresAt: number } {
  const n = ownFields(input, "", NEW_CODE_KEYS);
  if (typeof n.code !== "string" || !isCodeSyntax(n.code)) {
    throw new InvalidRecordError(
      "code",
      `must be 1 to ${MAX_CODE_LENGTH} VSCHAR characters (RFC 6749 Appendix A.11)`,
    );
  }
  return {
    code: n.code,
    data: validateGrant(n.data),
    expiresAt: expiry(n.expiresAt),
  };
}

/** An expiry: integer seconds since the Unix epoch, up to the year 9999. */
function expiry(value: unknown): number {
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 0 ||
    value > LIMITS.expiresAt
  ) {
    throw new InvalidRecordError(
      "expiresAt",
      `must be an integer number of seconds since the Unix epoch, from 0 to ${LIMITS.expiresAt}`,
    );
  }
  return value;
}

function validateGrant(value: unknown): StoredGrantData {
  const d = ownFields(value, "data", GRANT_KEYS);
  const method = required(d.codeChallengeMethod, "data.codeChallengeMethod");
  if (method !== "S256") {
    throw new InvalidRecordError(
      "data.codeChallengeMethod",
      'must be "S256" (RFC 7636 §4.2; "plain" is not accepted)',
    );
  }
  return {
    clientId: text(d.clientId, "data.clientId", VSCHAR, "VSCHAR characters"),
    subject: text(d.subject, "data.subject"),
    redirectUri: absoluteUri(d.redirectUri, "data.redirectUri"),
    scope: array(
      d.scope,
      "data.scope",
      LIMITS.scope,
      (token, field) =>
        text(
          token,
          field,
          SCOPE_TOKEN,
          "scope-token characters (RFC 6749 §3.3)",
        ),
    ),
    codeChallenge: sha256Base64url(d.codeChallenge, "data.codeChallenge"),
    codeChallengeMethod: method,
    nonce: optional(d.nonce, null, (v) => text(v, "data.nonce")),
    dpopJkt: optional(
      d.dpopJkt,
      null,
      (v) => sha256Base64url(v, "data.dpopJkt"),
    ),
    claims: optional(d.claims, {}, (v) => claims(v)),
    resource: optional(
      d.resource,
      [],
      (v) => array(v, "data.resource", LIMITS.resource, absoluteUri),
    ),
    grantId: optional(d.grantId, null, (v) => text(v, "data.grantId")),
  };
}

/**
 * Reads the own properties of a plain object, refusing any key outside
 * `allowed`. Only own properties are read, so a polluted prototype cannot
 * supply a field.
 */
function ownFields<K extends string>(
  value: unknown,
  path: string,
  allowed: readonly K[],
): { [key in K]: unknown } {
  if (!isPlainObject(value)) {
    throw new InvalidRecordError(path || "record", "must be a plain object");
  }
  for (const key of Reflect.ownKeys(value)) {
    if (
      typeof key !== "string" || !(allowed as readonly string[]).includes(key)
    ) {
      throw new InvalidRecordError(
        join(path, describeKey(key)),
        "is not a known field",
      );
    }
  }
  const out = {} as { [key in K]: unknown };
  for (const key of allowed) {
    out[key] = Object.hasOwn(value, key) ? value[key] : undefined;
  }
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function describeKey(key: string | symbol): string {
  const name = typeof key === "symbol" ? String(key) : key;
  return name.length > 64 ? `${name.slice(0, 64)}…` : name;
}

function required(value: unknown, field: string): unknown {
  if (value === undefined) throw new InvalidRecordError(field, "is required");
  return value;
}

function optional<T, D>(
  value: unknown,
  absent: D,
  validate: (value: unknown) => T,
): T | D {
  return value === undefined || value === null ? absent : validate(value);
}

/** Text PostgreSQL can store and return unchanged: well-formed, no NUL. */
function isStorableText(value: string): boolean {
  return value.isWellFormed() && !value.includes("\0");
}

function text(
  value: unknown,
  field: string,
  pattern?: RegExp,
  patternName?: string,
): string {
  required(value, field);
  if (typeof value !== "string" || value.length === 0) {
    throw new InvalidRecordError(field, "must be a non-empty string");
  }
  if (value.length > LIMITS.text) {
    throw new InvalidRecordError(
      field,
      `must be at most ${LIMITS.text} characters`,
    );
  }
  if (!isStorableText(value)) {
    throw new InvalidRecordError(
      field,
      "must be well-formed Unicode without NUL characters",
    );
  }
  if (pattern && !pattern.test(value)) {
    throw new InvalidRecordError(field, `must consist of ${patternName}`);
  }
  return value;
}

function sha256Base64url(value: unknown, field: string): string {
  required(value, field);
  if (typeof value !== "string" || !SHA256_BASE64URL.test(value)) {
    throw new InvalidRecordError(
      field,
      "must be 43 base64url characters (a SHA-256 digest, RFC 4648 §5)",
    );
  }
  return value;
}

// RFC 6749 §3.1.2 (redirection endpoint) and RFC 8707 §2 (resource): an
// absolute URI that must not include a fragment component.
function absoluteUri(value: unknown, field: string): string {
  const uri = text(value, field);
  if (!URL.canParse(uri) || uri.includes("#")) {
    throw new InvalidRecordError(
      field,
      "must be an absolute URI without a fragment",
    );
  }
  return uri;
}

function array<T>(
  value: unknown,
  field: string,
  max: number,
  item: (value: unknown, field: string) => T,
): T[] {
  required(value, field);
  if (!Array.isArray(value)) {
    throw new InvalidRecordError(field, "must be an array");
  }
  if (value.length > max) {
    throw new InvalidRecordError(field, `must have at most ${max} items`);
  }
  return Array.from(value, (v, i) => item(v, `${field}[${i}]`));
}

function claims(value: unknown): JsonObject {
  if (!isPlainObject(value)) {
    throw new InvalidRecordError("data.claims", "must be a JSON object");
  }
  const budget = { values: LIMITS.claimsValues };
  const copy = json(value, 0, new Set(), budget) as JsonObject;
  if (JSON.stringify(copy).length > LIMITS.claimsJson) {
    throw new InvalidRecordError(
      "data.claims",
      `must serialise to at most ${LIMITS.claimsJson} characters of JSON`,
    );
  }
  return copy;
}

/** A deep copy of a JSON value, refusing anything JSON cannot hold exactly. */
function json(
  value: unknown,
  depth: number,
  ancestors: Set<object>,
  budget: { values: number },
): JsonValue {
  const fail = (rule: string): never => {
    throw new InvalidRecordError("data.claims", rule);
  };
  if (--budget.values < 0) {
    fail(`must hold at most ${LIMITS.claimsValues} values`);
  }
  switch (typeof value) {
    case "boolean":
      return value;
    case "number":
      return Number.isFinite(value)
        ? value
        : fail("must hold only finite numbers");
    case "string":
      if (value.length > LIMITS.text) {
        fail(`must hold strings of at most ${LIMITS.text} characters`);
      }
      return isStorableText(value)
        ? value
        : fail("must hold well-formed Unicode strings without NUL characters");
    case "object":
      break;
    default:
      return fail(`must hold only JSON values (found ${typeof value})`);
  }
  if (value === null) return null;
  if (depth >= LIMITS.claimsDepth) {
    fail(`must be nested at most ${LIMITS.claimsDepth} levels deep`);
  }
  if (ancestors.has(value)) fail("must not be cyclic");
  ancestors.add(value);
  let copy: JsonValue;
  if (Array.isArray(value)) {
    copy = Array.from(
      value,
      (item) => json(item, depth + 1, ancestors, budget),
    );
  } else if (isPlainObject(value)) {
    if (Object.getOwnPropertySymbols(value).length > 0) {
      fail("must not have symbol keys");
    }
    copy = Object.fromEntries(
      Object.keys(value).map((key) => {
        if (FORBIDDEN_KEYS.has(key)) fail(`must not have a "${key}" key`);
        if (!isStorableText(key)) {
          fail("must have well-formed Unicode keys without NUL characters");
        }
        return [key, json(value[key], depth + 1, ancestors, budget)];
      }),
    );
  } else {
    copy = fail("must hold only plain objects, arrays and JSON scalars");
  }
  ancestors.delete(value);
  return copy;
}
