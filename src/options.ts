/**
 * The options of the store, of the sweeper and of the migration: their
 * defaults, and their validation. Units are in the names (`timeoutMs`,
 * `tombstoneRetentionSeconds`); an unknown option is an error, so a
 * misspelt or renamed one is never silently ignored. A value of the wrong
 * type is a `TypeError`, a number out of range a `RangeError`.
 *
 * @module
 */

import { DEFAULT_TABLE, parseTableName, type TableName } from "./table_name.ts";

export { DEFAULT_TABLE };

/** The default of {@linkcode CodeStoreOptions.timeoutMs}: 10 seconds. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** The default of {@linkcode CodeStoreOptions.tombstoneRetentionSeconds}: a day. */
export const DEFAULT_TOMBSTONE_RETENTION_SECONDS = 86_400;

/** The default largest batch when coalescing (`coalesce.maxBatch`). */
export const DEFAULT_MAX_BATCH = 64;

/** Options for `createCodeStore`. */
export interface CodeStoreOptions {
  /**
   * The table, optionally schema-qualified (`"auth.codes"`): lower-case
   * letters, digits and `_`. Defaults to `"authorization_codes"`. Its
   * tombstones go in `<table>_spent`. Create both with `migrate` (same
   * option).
   */
  readonly table?: string | undefined;
  /**
   * How long the tombstone of a redeemed code is kept, in seconds (default
   * 86 400, a day): long enough to cover the refresh tokens issued from it.
   * `spent()` answers `null` once it has passed; `purgeExpired` deletes it.
   * While it lasts, the same code value can be neither stored nor redeemed
   * again.
   */
  readonly tombstoneRetentionSeconds?: number | undefined;
  /**
   * How long a call may wait for the database, in milliseconds (default
   * 10 000; at most 2 147 483 647, about 24.8 days). There is no `Infinity`:
   * a statement that never settles (a connection lost at the wrong moment)
   * would hold its slot for good, where a finite deadline gives it back.
   * Every call keeps its own deadline:
   * past it, the call rejects with `OperationTimeoutError` alone, never
   * failing the calls it shares a statement with. A call whose statement
   * was not yet sent (queued in the store or in postgres.js, or waiting for
   * a connection to open) is left out of it and has no effect; a statement
   * that runs is cancelled, on the server that runs it, once no call in it
   * still waits. A safety net: postgres.js queues queries while it cannot
   * connect, retrying with a backoff of up to 20 seconds per attempt, so
   * during an outage a call could otherwise wait for minutes.
   */
  readonly timeoutMs?: number | undefined;
  /**
   * Coalescing (default on): concurrent calls share one statement. `take`s
   * that arrive together become one `DELETE ... RETURNING` of all their
   * codes, each caller getting its own entry or `null` (a code asked for
   * twice goes to the first caller still waiting); `put`s become one
   * multi-row `INSERT ... ON CONFLICT DO NOTHING`, where a row that was not
   * inserted is a `DuplicateCodeError` for that caller only (an entry is
   * never overwritten). A lone call is sent at once; calls made in the same
   * tick, or while `maxConnections` statements are
   * in flight, go out together, at most `maxBatch` (default 64) per
   * statement. A statement that fails fails every call still waiting in it.
   * `false` sends one statement per call.
   */
  readonly coalesce?:
    | boolean
    | {
      readonly maxBatch?: number | undefined;
      /** @deprecated Use {@linkcode CodeStoreOptions.maxConnections}. */
      readonly concurrency?: number | undefined;
    }
    | undefined;
  /**
   * The most connections of the pool the store's statements occupy at once
   * (default: half the pool's `max`, rounded up; 1 to 10 000). Each store
   * statement runs alone on its connection, and one waiting on a lock holds
   * it: the bound leaves the rest of a shared pool to the application, and
   * calls beyond it wait in the store (within `timeoutMs`), where they are
   * coalesced.
   */
  readonly maxConnections?: number | undefined;
}

/** Validated store options. */
export interface StoreSettings {
  readonly table: TableName;
  readonly timeoutMs: number;
  readonly retentionSeconds: number;
  /** The largest batch; 1 without coalescing. */
  readonly maxBatch: number;
  /** `maxConnections`, or `undefined` for the default (half the pool). */
  readonly maxConnections: number | undefined;
}

/** Options renamed in 0.2, with the name to use now. */
const RENAMED: Readonly<Record<string, string>> = {
  timeout: "timeoutMs",
  tombstoneRetention: "tombstoneRetentionSeconds",
};

// setTimeout's largest delay (2^31 - 1 ms, about 24.8 days).
const MAX_TIMER = 2_147_483_647;
const TEN_YEARS = 10 * 366 * 86_400;

/**
 * Validates the options of `createCodeStore`.
 *
 * @throws {TypeError} For an unknown option or a value of the wrong type.
 * @throws {RangeError} For a number out of range.
 */
export function storeSettings(options: unknown): StoreSettings {
  const o = knownOptions(options, [
    "table",
    "timeoutMs",
    "tombstoneRetentionSeconds",
    "coalesce",
    "maxConnections",
  ]);
  const coalesce = coalesceSettings(o.coalesce);
  const maxConnections = o.maxConnections === undefined
    ? coalesce?.concurrency
    : integer(o.maxConnections, "options.maxConnections", 1, 10_000);
  return {
    table: parseTableName(o.table),
    timeoutMs: timeoutMs(o.timeoutMs, DEFAULT_TIMEOUT_MS, false),
    retentionSeconds: retentionSeconds(o.tombstoneRetentionSeconds),
    maxBatch: coalesce?.maxBatch ?? 1,
    maxConnections,
  };
}

/**
 * The connections a store uses at once on a pool of `max`: the
 * `maxConnections` option, or half the pool (rounded up).
 */
export function storeConnections(
  maxConnections: number | undefined,
  max: number,
): number {
  return maxConnections ?? Math.max(1, Math.ceil(max / 2));
}

/**
 * Reads an options object (`undefined` for none), refusing any key outside
 * `allowed`.
 *
 * @throws {TypeError} If it is not an object or has an unknown key.
 */
export function knownOptions<K extends string>(
  options: unknown,
  allowed: readonly K[],
): { readonly [key in K]?: unknown } {
  if (options === undefined) return {};
  if (typeof options !== "object" || options === null) {
    throw new TypeError("options must be an object");
  }
  for (const key of Object.keys(options)) {
    if (!(allowed as readonly string[]).includes(key)) {
      const renamed = RENAMED[key];
      throw new TypeError(
        `options.${key} is not an option` +
          (renamed
            ? `: it is called ${renamed} now`
            : ` (known: ${allowed.join(", ")})`),
      );
    }
  }
  return options as { readonly [key in K]?: unknown };
}

/**
 * A timeout in milliseconds: from 1 to about 24.8 days, or `Infinity` where
 * `infinite` allows it.
 *
 * @throws {TypeError} If it is not a number.
 * @throws {RangeError} If it is out of range.
 */
export function timeoutMs(
  value: unknown,
  fallback: number,
  infinite = true,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number") {
    throw new TypeError("options.timeoutMs must be a number of milliseconds");
  }
  if (
    !(value >= 1 && (value <= MAX_TIMER || (infinite && value === Infinity)))
  ) {
    throw new RangeError(
      `options.timeoutMs must be from 1 to ${MAX_TIMER} milliseconds` +
        (infinite ? ", or Infinity" : ""),
    );
  }
  return value;
}

/**
 * A tombstone retention: whole seconds, from 1 to ten years.
 *
 * @throws {TypeError} If it is not a number.
 * @throws {RangeError} If it is out of range or not whole.
 */
export function retentionSeconds(value: unknown): number {
  if (value === undefined) return DEFAULT_TOMBSTONE_RETENTION_SECONDS;
  return integer(value, "options.tombstoneRetentionSeconds", 1, TEN_YEARS);
}

/**
 * An integer from `min` to `max`.
 *
 * @throws {TypeError} If it is not a number.
 * @throws {RangeError} If it is out of range or not an integer.
 */
export function integer(
  value: unknown,
  name: string,
  min: number,
  max: number,
): number {
  if (typeof value !== "number") {
    throw new TypeError(`${name} must be a number`);
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}

function coalesceSettings(
  value: unknown,
):
  | { readonly maxBatch: number; readonly concurrency: number | undefined }
  | undefined {
  if (value === false) return undefined;
  if (value === true || value === undefined) {
    return { maxBatch: DEFAULT_MAX_BATCH, concurrency: undefined };
  }
  if (typeof value !== "object" || value === null) {
    throw new TypeError(
      "options.coalesce must be true, false, or { maxBatch?, concurrency? }",
    );
  }
  const { maxBatch, concurrency } = value as Record<string, unknown>;
  for (const key of Object.keys(value)) {
    if (key !== "maxBatch" && key !== "concurrency") {
      throw new TypeError(`options.coalesce.${key} is not an option`);
    }
  }
  return {
    maxBatch: maxBatch === undefined
      ? DEFAULT_MAX_BATCH
      : integer(maxBatch, "options.coalesce.maxBatch", 1, 10_000),
    concurrency: concurrency === undefined
      ? undefined
      : integer(concurrency, "options.coalesce.concurrency", 1, 10_000),
  };
}
