/**
 * Where the store leans on postgres.js 3.4.9's behaviour beyond its typed
 * API, or works around one of its defects. Each has a test that shows it.
 *
 * @module
 */

import type { Sql } from "postgres";

const utf8 = new TextDecoder();

/**
 * The text of every column of a raw result (`.raw()`), skipping holes.
 * Statements read raw bytes, so no type parser and no `transform` of the
 * caller's pool touches a value (a value transform would rewrite hashes,
 * and keys inside claims). postgres.js 3.4.9 does not reset its row
 * counter when a statement fails while its rows arrive (a server error
 * mid-result, a connection lost mid-result), so the next result on that
 * connection starts with empty slots (porsager/postgres #1119, #1181); the
 * rows after them are the statement's own.
 *
 * @param result A raw result.
 * @returns Its rows, each column as text or `null`.
 */
export function decode(
  result: readonly (readonly (Uint8Array | null)[] | undefined)[],
): (string | null)[][] {
  const rows: (string | null)[][] = [];
  for (const columns of result) {
    if (!columns) continue;
    rows.push(
      columns.map((bytes) => bytes === null ? null : utf8.decode(bytes)),
    );
  }
  return rows;
}

/**
 * After a statement failed because its connection broke, the store sends
 * nothing on that pool for a moment (ms). postgres.js 3.4.9 keeps such a
 * connection in its pool until the socket's `close` event (tens of
 * milliseconds later under load, after the `error`), and a query handed to
 * it in between never settles and wedges the connection for good once it
 * reconnects (the driver keeps its last query after a socket error:
 * porsager/postgres #1130, #1142). Waiting lets the close come first.
 *
 * @param error The error a statement failed with.
 * @returns How long to send nothing, in milliseconds (0: no pause).
 */
export function afterBrokenConnection(error: unknown): number {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return 0;
  return BROKEN_CONNECTION.has(code) || code.startsWith("08") ||
      /^57P0[123]$/.test(code)
    ? 200
    : 0;
}

/** postgres.js and Node socket error codes of a broken connection. */
const BROKEN_CONNECTION = new Set([
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);

/**
 * Checks that `sql` is a postgres.js 3 pool as the store relies on it: its
 * connection settings (`options.host`, `options.port`, for the store's own
 * cancel requests) and a query's `state` and `active` fields (which backend
 * runs it, and whether it is the one its connection executes), read to
 * cancel a statement whose calls all timed out. A driver without them
 * (another major version, a wrapper) would silently turn "`sent: false`
 * means no effect" and the cancel into guesses, so the store refuses it.
 *
 * @param sql The pool.
 * @throws {TypeError} If it lacks what the store relies on.
 */
export function checkDriver(sql: Sql): void {
  const options = (sql as { options?: { host?: unknown; port?: unknown } })
    .options;
  const missing: string[] = [];
  if (!Array.isArray(options?.host)) missing.push("options.host");
  if (!Array.isArray(options?.port)) missing.push("options.port");
  // A query is lazy: made, never awaited, it is never sent.
  const probe = sql`select 1` as unknown as Record<string, unknown>;
  if (!("state" in probe) || probe.state !== null) missing.push("query.state");
  if (probe.active !== false) missing.push("query.active");
  if (typeof probe.raw !== "function") missing.push("query.raw()");
  if (missing.length > 0) {
    throw new TypeError(
      "createCodeStore: this postgres.js pool lacks what the store relies " +
        `on (${missing.join(", ")}); use postgres.js 3.4 (npm:postgres@^3.4.9)`,
    );
  }
}
