/**
 * The schema file: how a {@linkcode CodeEntry} maps to a table row, and the
 * rules every record must meet. Validation fails closed: a missing field, a
 * value of the wrong type, an unknown key or a PKCE method other than `S256`
 * is an {@linkcode InvalidRecordError}, never a default.
 *
 * @module
 */

import { CODE_TABLE, TOMBSTONE_FROM_ROW } from "./_columns.ts";
import { InvalidRecordError } from "./errors.ts";
import {
  isCodeSyntax,
  MAX_CODE_LENGTH,
  MIN_CODE_LENGTH,
  SCOPE_TOKEN,
  VSCHAR,
} from "./_grammar.ts";
import {
  absoluteUri,
  array,
  grantIdentifier,
  LIMITS,
  optional,
  ownFields,
  required,
  sha256Base64url,
  text,
  withinDataLimit,
} from "./_fields.ts";
import { jsonObject } from "./_json.ts";
import type {
  CodeEntry,
  CodeRecord,
  JsonObject,
  SpentCode,
  StoredGrantData,
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
  /** `GrantData.context` (`jsonb`), `{}` when absent. */
  readonly context: JsonObject;
};

/** The columns of {@linkcode CodeRow}, in table order (from `_columns.ts`). */
export const CODE_COLUMNS: readonly (keyof CodeRow)[] = CODE_TABLE
  .filter((column) => column.row)
  .map((column) => column.name as keyof CodeRow);

/** Where each column of `TOMBSTONE_FROM_ROW` is in a positional tombstone. */
const SPENT_AT: Readonly<Record<string, number>> = Object.fromEntries(
  TOMBSTONE_FROM_ROW.map((column, i) => [column, i]),
);

/** Where each column of {@linkcode CODE_COLUMNS} is in a positional row. */
const AT = Object.fromEntries(
  CODE_COLUMNS.map((column, i) => [column, i]),
) as Record<keyof CodeRow, number>;

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
  "context",
] as const;

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
export function fromRecord(entry: CodeRecord): CodeRow {
  return rowOf(validateEntry(entry));
}

/** The row of an entry that already passed validation. */
export function rowOf({ codeHash, data, expiresAt }: CodeEntry): CodeRow {
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
    context: data.context,
  };
}

/**
 * Maps a row back to its record, validating it on the way out as well: a
 * row that breaks the rules (written by other means) is refused rather than
 * handed to the token endpoint.
 *
 * @param row A row of the codes table.
 * @returns The record, with `nonce`/`dpopJkt`/`grantId` `null`, `claims`
 * and `context` `{}` and `resource` `[]` when absent.
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
 *   context: {},
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
      context: r.context,
    },
  });
}

/**
 * Validates a tombstone read from the database (the columns of
 * `TOMBSTONE_FROM_ROW` in `_columns.ts`, then the spending time in epoch
 * seconds): a row written by other means that breaks the rules is refused
 * like an entry.
 *
 * @throws {InvalidRecordError} On the first rule broken.
 */
export function toSpentCode(values: readonly unknown[]): SpentCode {
  const codeHash = values[SPENT_AT.code_hash!];
  const clientId = values[SPENT_AT.client_id!];
  const subject = values[SPENT_AT.subject!];
  const redirectUri = values[SPENT_AT.redirect_uri!];
  const challenge = values[SPENT_AT.code_challenge!];
  const grantId = values[SPENT_AT.grant_id!];
  const spentAt = values[TOMBSTONE_FROM_ROW.length];
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
    grantId: optional(grantId, null, (v) => grantIdentifier(v, "grantId")),
    spentAt,
  };
}

/**
 * Validates a record and returns a normalised copy that shares nothing
 * mutable with the input (so what is stored is what was checked).
 *
 * @throws {InvalidRecordError} On the first rule broken.
 */
export function validateEntry(input: unknown): CodeEntry {
  const e = ownFields(input, "", ENTRY_KEYS);
  return entry(e.codeHash, e.data, e.expiresAt);
}

/**
 * Validates an entry read from the database as the columns of
 * {@linkcode CODE_COLUMNS}, in that order, with `expires_at` in epoch
 * seconds: the same rules as {@linkcode toRecord}.
 *
 * @throws {InvalidRecordError} On the first rule broken.
 */
export function entryFromColumns(values: readonly unknown[]): CodeEntry {
  if (!Array.isArray(values) || values.length !== CODE_COLUMNS.length) {
    throw new InvalidRecordError(
      "row",
      `must have the ${CODE_COLUMNS.length} columns of the codes table`,
    );
  }
  // The object is built here with exactly the grant's keys: its fields are
  // validated one by one, without the key check `toRecord` needs.
  return {
    codeHash: sha256Base64url(values[AT.code_hash], "codeHash"),
    data: grantFields({
      clientId: values[AT.client_id],
      subject: values[AT.subject],
      redirectUri: values[AT.redirect_uri],
      scope: values[AT.scope],
      codeChallenge: values[AT.code_challenge],
      codeChallengeMethod: values[AT.code_challenge_method],
      nonce: values[AT.nonce],
      dpopJkt: values[AT.dpop_jkt],
      claims: values[AT.claims],
      resource: values[AT.resource],
      grantId: values[AT.grant_id],
      context: values[AT.context],
    }, true),
    expiresAt: expiry(values[AT.expires_at]),
  };
}

function entry(
  codeHash: unknown,
  data: unknown,
  expiresAt: unknown,
): CodeEntry {
  return {
    codeHash: sha256Base64url(codeHash, "codeHash"),
    data: validateGrant(data),
    expiresAt: expiry(expiresAt),
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
      `must be ${MIN_CODE_LENGTH} to ${MAX_CODE_LENGTH} VSCHAR characters ` +
        "(RFC 6749 Appendix A.11; §10.10 asks that a code be hard to guess)",
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

/**
 * A grant given by a caller: its fields' rules, then the bound on the whole
 * ({@linkcode LIMITS.data} bytes of JSON).
 */
function validateGrant(value: unknown): StoredGrantData {
  const data = grantFields(ownFields(value, "data", GRANT_KEYS));
  withinDataLimit(data, "data");
  return data;
}

/** The grant's rules, field by field, on an object with only its keys. */
function grantFields(
  d: Readonly<Record<string, unknown>>,
  parsed = false,
): StoredGrantData {
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
    scope: array(d.scope, "data.scope", LIMITS.scope, scopeToken, parsed),
    codeChallenge: sha256Base64url(d.codeChallenge, "data.codeChallenge"),
    codeChallengeMethod: method,
    nonce: optional(d.nonce, null, nonce),
    dpopJkt: optional(d.dpopJkt, null, dpopJkt),
    claims: optional(d.claims, {}, parsed ? parsedClaims : claims),
    resource: optional(d.resource, [], parsed ? parsedResources : resources),
    grantId: optional(d.grantId, null, grantId),
    context: optional(d.context, {}, parsed ? parsedContext : context),
  };
}

// The rules of the optional fields, made once (not a closure per record).
const scopeToken = (token: unknown, field: string) =>
  text(token, field, SCOPE_TOKEN, "scope-token characters (RFC 6749 §3.3)");
const nonce = (v: unknown) => text(v, "data.nonce");
const dpopJkt = (v: unknown) => sha256Base64url(v, "data.dpopJkt");
const claims = (v: unknown) => jsonObject(v, "data.claims");
const context = (v: unknown) => jsonObject(v, "data.context");
const parsedClaims = (v: unknown) => jsonObject(v, "data.claims", true);
const parsedContext = (v: unknown) => jsonObject(v, "data.context", true);
const grantId = (v: unknown) => grantIdentifier(v, "data.grantId");
const resources = (v: unknown) =>
  array(v, "data.resource", LIMITS.resource, absoluteUri);
const parsedResources = (v: unknown) =>
  array(v, "data.resource", LIMITS.resource, absoluteUri, true);
