/**
 * Field validators: each reads a value that came from outside (a caller or
 * a row), checks one rule, and returns what is safe to keep, or throws an
 * {@linkcode InvalidRecordError} naming the field, never the value.
 *
 * @module
 */

import { InvalidRecordError } from "./errors.ts";
import {
  CONTROL_CHARACTER,
  MAX_GRANT_ID_LENGTH,
  SHA256_BASE64URL,
} from "./_grammar.ts";

/** Bounds on what a record may hold, so no input can exhaust the server. */
export const LIMITS = {
  /** Characters in any string field, array element or JSON string. */
  text: 4096,
  /** Scope tokens. */
  scope: 256,
  /** Resource indicators. */
  resource: 64,
  /** Nesting depth of a JSON field. */
  jsonDepth: 32,
  /** Values (objects, arrays, scalars) in a JSON field. */
  jsonValues: 10_000,
  /** Characters of a JSON field serialised. */
  jsonText: 65_536,
  /**
   * UTF-8 bytes of a record's whole grant (`data`, as validated, optional
   * fields filled in) serialised by `JSON.stringify`: 64 KiB.
   */
  data: 65_536,
  /** Latest `expiresAt`: 9999-12-31T23:59:59Z. */
  expiresAt: 253_402_300_799,
} as const;

/**
 * Reads the own properties of a plain object, refusing any key outside
 * `allowed`. Only own properties are read, so a polluted prototype cannot
 * supply a field.
 */
export function ownFields<K extends string>(
  value: unknown,
  path: string,
  allowed: readonly K[],
): { [key in K]: unknown } {
  if (!isPlainObject(value)) {
    throw new InvalidRecordError(path || "record", "must be a plain object");
  }
  const known = keySet(allowed);
  for (const key of Reflect.ownKeys(value)) {
    if (typeof key !== "string" || !known.has(key)) {
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

const keySets = new WeakMap<readonly string[], ReadonlySet<string>>();

/** The keys of `allowed` as a set, made once per list. */
function keySet(allowed: readonly string[]): ReadonlySet<string> {
  let set = keySets.get(allowed);
  if (!set) keySets.set(allowed, set = new Set(allowed));
  return set;
}

/** An object whose prototype is `Object.prototype` or `null`. */
export function isPlainObject(
  value: unknown,
): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Whether `value` is an ordinary array: `Array.prototype`, and no own
 * properties besides its indices and `length` (an own `Symbol.iterator`
 * could make an empty-looking array yield anything).
 */
export function isPlainArray(value: unknown): value is unknown[] {
  return Array.isArray(value) &&
    Object.getPrototypeOf(value) === Array.prototype &&
    Reflect.ownKeys(value).length === value.length + 1;
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function describeKey(key: string | symbol): string {
  const name = typeof key === "symbol" ? String(key) : key;
  return name.length > 64 ? `${name.slice(0, 64)}…` : name;
}

/** `value`, unless it is `undefined`. */
export function required(value: unknown, field: string): unknown {
  if (value === undefined) throw new InvalidRecordError(field, "is required");
  return value;
}

/** `absent` for `undefined` or `null`, else `validate(value)`. */
export function optional<T, D>(
  value: unknown,
  absent: D,
  validate: (value: unknown) => T,
): T | D {
  return value === undefined || value === null ? absent : validate(value);
}

/** Text PostgreSQL can store and return unchanged: well-formed, no NUL. */
export function isStorableText(value: string): boolean {
  return value.isWellFormed() && !value.includes("\0");
}

/**
 * A non-empty string of at most {@linkcode LIMITS.text} storable
 * characters, matching `pattern` if given.
 */
export function text(
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

/**
 * A grant identifier, as `put` stores it (`data.grantId`) and `revokeGrant`
 * takes it: 1 to {@linkcode MAX_GRANT_ID_LENGTH} characters of well-formed
 * Unicode, no control character (C0, DEL, C1). One rule at both ends, so
 * that every code stored with a grant id can be revoked by it.
 */
export function grantIdentifier(value: unknown, field: string): string {
  required(value, field);
  if (
    typeof value !== "string" || value.length === 0 ||
    value.length > MAX_GRANT_ID_LENGTH || !value.isWellFormed() ||
    CONTROL_CHARACTER.test(value)
  ) {
    throw new InvalidRecordError(
      field,
      `must be a string of 1 to ${MAX_GRANT_ID_LENGTH} characters of ` +
        "well-formed Unicode without control characters (C0, DEL, C1)",
    );
  }
  return value;
}

/**
 * An absolute URI without a fragment: RFC 6749 §3.1.2 (a redirection
 * endpoint) and RFC 8707 §2 (a resource indicator).
 */
export function absoluteUri(value: unknown, field: string): string {
  const uri = text(value, field);
  if (validUris.has(uri)) return uri;
  if (!URL.canParse(uri) || uri.includes("#")) {
    throw new InvalidRecordError(
      field,
      "must be an absolute URI without a fragment",
    );
  }
  if (validUris.size >= 1024) validUris.clear();
  validUris.add(uri);
  return uri;
}

/**
 * URIs seen valid lately: a client's redirect URI comes back with each of
 * its codes, and parsing it is most of what checking it costs.
 */
const validUris = new Set<string>();

/**
 * A copy of an ordinary array of at most `max` items, each validated by
 * `item`, read by index.
 */
export function array<T>(
  value: unknown,
  field: string,
  max: number,
  item: (value: unknown, field: string) => T,
  parsed = false,
): T[] {
  required(value, field);
  if (!Array.isArray(value)) {
    throw new InvalidRecordError(field, "must be an array");
  }
  if (value.length > max) {
    throw new InvalidRecordError(field, `must have at most ${max} items`);
  }
  // An array `JSON.parse` made is ordinary: only a caller's needs looking at.
  if (!parsed && !isPlainArray(value)) {
    throw new InvalidRecordError(
      field,
      "must be an ordinary array (no holes, no extra properties)",
    );
  }
  // A parsed array is the caller's own: checked in place, not copied.
  const copy: T[] = parsed ? value : new Array(value.length);
  for (let i = 0; i < value.length; i++) {
    copy[i] = item(value[i], itemField(field, i));
  }
  return copy;
}

const itemFields = new Map<string, string[]>();

/**
 * `field[i]`, made once per field and index (fields are the schema's own
 * names, and indexes are bounded by the array limits).
 */
function itemField(field: string, i: number): string {
  let names = itemFields.get(field);
  if (!names) itemFields.set(field, names = []);
  return names[i] ??= `${field}[${i}]`;
}

/**
 * Refuses a grant whose JSON (`JSON.stringify`) is over
 * {@linkcode LIMITS.data} bytes of UTF-8: a bound on what one record, and
 * so one statement of a batch, can carry.
 *
 * @throws {InvalidRecordError} Naming `field`, if it is too large.
 */
export function withinDataLimit(data: object, field: string): void {
  const json = JSON.stringify(data);
  // A UTF-16 unit is at most 3 bytes of UTF-8: most records need no count.
  if (json.length * 3 <= LIMITS.data || utf8Length(json) <= LIMITS.data) {
    return;
  }
  throw new InvalidRecordError(
    field,
    `must serialise (JSON.stringify) to at most ${LIMITS.data} bytes of ` +
      "UTF-8 (64 KiB)",
  );
}

/** The UTF-8 length of a well-formed string, without encoding it. */
function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    // A surrogate pair is 4 bytes: 2 for each of its units.
    bytes += unit < 0x80
      ? 1
      : unit < 0x800 || (unit & 0xf800) === 0xd800
      ? 2
      : 3;
  }
  return bytes;
}

/** 43 base64url characters: a SHA-256 digest (a code hash, an S256 challenge, a JWK thumbprint). */
export function sha256Base64url(value: unknown, field: string): string {
  required(value, field);
  if (typeof value !== "string" || !SHA256_BASE64URL.test(value)) {
    throw new InvalidRecordError(
      field,
      "must be 43 base64url characters (a SHA-256 digest, RFC 4648 §5)",
    );
  }
  return value;
}
