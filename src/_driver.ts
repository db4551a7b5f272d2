/**
 * Where the store leans on postgres.js 3.4.9's behaviour beyond its typed
 * API, or works around one of its defects. Each has a test that shows it.
 *
 * @module
 */

import type { Sql } from "postgres";
import { bounded, sendCancelRequest } from "./_cancel.ts";
import { unrefTimer } from "./_platform.ts";

const utf8 = new TextDecoder();

/** A raw result: each row's columns as bytes (holes possible, see `decode`). */
export type Raw = readonly (readonly (Uint8Array | null)[] | undefined)[];

/** The parts of a postgres.js 3.4.9 query the store reads (not typed there). */
interface DriverQuery extends Promise<Raw> {
  /**
   * The key of the backend it was written to (`{ pid, secret }`), `null`
   * before: one object per connection of the pool, kept across reconnects.
   */
  readonly state: { readonly pid?: unknown; readonly secret?: unknown } | null;
  /**
   * Whether it is the query its connection executes now: set when it
   * reaches the front of the connection's pipeline, cleared when it settles.
   */
  readonly active: boolean;
}

/** The part of a postgres.js 3.4.9 connection the store uses. */
interface DriverConnection {
  /**
   * Ends the connection: fails its queries with `CONNECTION_DESTROYED`,
   * drops what it had not written yet, sends Terminate and reads nothing
   * more. Once its socket closes, the pool opens it again when needed.
   */
  terminate(): void;
}

/**
 * The connection behind each backend key a store statement was written to,
 * learnt when postgres.js reports the write (`onexecute`), which it does
 * unless the statement waits for its Describe (the first use of a prepared
 * statement on a connection, and every statement with `prepare: false`).
 */
const connections = new WeakMap<object, DriverConnection>();

/** How often to look again at a statement waiting behind another. */
const RETRY_MS = 50;

/** How long to keep waiting for an abandoned statement to start, to stop it. */
const GIVE_UP_MS = 60_000;

/** A store statement sent with {@linkcode sendAlone}. */
export interface Alone {
  /** Its raw result. */
  readonly result: Promise<Raw>;
  /**
   * Nobody waits for it any more: stops it on the server, once it is the
   * statement its connection executes (see {@linkcode sendAlone}). A
   * `written` statement is looked at again until it is; one not written
   * (waiting for its Describe) is stopped only if it is now. Never throws.
   */
  stop(written: boolean): void;
  /**
   * Whether `stop` ended its connection: then `result` rejects with
   * `CONNECTION_DESTROYED`, an error that belongs to no caller.
   */
  readonly ended: boolean;
}

/**
 * Sends one statement as the last one on its connection, so that it can be
 * stopped without touching anything else.
 *
 * postgres.js pipelines queries on a busy connection; a query written behind
 * a store statement would start on the server as soon as the statement ends,
 * while the client has not read its result yet, and a cancel request aimed
 * at the statement would then cancel that query. So the statement's
 * `onexecute` returns `false`, which makes postgres.js set the connection
 * aside ("full") until the result is read: nothing is written behind it.
 * Queries written before it run first; it is not `active` until they end.
 *
 * To stop it, the store sends PostgreSQL's CancelRequest (it interrupts a
 * statement waiting for a lock, a commit waiting for a standby). A cancel
 * is delivered asynchronously: after the statement ended by itself, it
 * could still reach the backend once the pool has sent it the next query.
 * So when the connection is known, it is ended first (Terminate), and the
 * backend never gets another query; the pool opens a new connection. When
 * it is not known (see {@linkcode connections}), only the cancel is sent.
 * A connection whose statement never settles (postgres.js #1130: a query
 * handed to it between a socket error and the close) is ended the same way
 * once every call in the statement has timed out, and comes back.
 *
 * Prepared as the pool's `prepare` option says.
 *
 * @param sql The pool.
 * @param text The statement.
 * @param parameters Its parameters.
 * @returns The statement.
 */
export function sendAlone(
  sql: Sql,
  text: string,
  parameters: readonly unknown[],
): Alone {
  let settled = false;
  const options = {
    prepare: sql.options?.prepare !== false,
    onexecute: (connection: DriverConnection) => {
      if (query.state) connections.set(query.state, connection);
      return false;
    },
  };
  const query = sql.unsafe(
    text,
    parameters as never[],
    options as { prepare: boolean },
  ).raw() as unknown as DriverQuery;
  const done = () => {
    settled = true;
  };
  query.then(done, done);
  const statement = {
    result: query as Promise<Raw>,
    ended: false,
    stop(written: boolean) {
      const until = performance.now() + GIVE_UP_MS;
      const attempt = () => {
        if (settled) return;
        const { state, active } = query;
        const pid = state?.pid;
        const secret = state?.secret;
        if (
          active === true && typeof pid === "number" &&
          typeof secret === "number"
        ) {
          const connection = connections.get(state!);
          if (connection) {
            statement.ended = true;
            connection.terminate();
          }
          sendCancelRequest(sql.options, pid, secret);
        } else if (written && performance.now() < until) {
          unrefTimer(setTimeout(attempt, RETRY_MS));
        }
      };
      attempt();
    },
  };
  return statement;
}

/**
 * One statement, sent with {@linkcode sendAlone}, rejecting with an
 * `OperationTimeoutError` after `ms`, and stopped then.
 *
 * @param sql The pool.
 * @param operation The operation's name, for the error.
 * @param ms The time bound.
 * @param text The statement.
 * @param parameters Its parameters.
 * @returns Its raw result.
 */
export function boundedQuery(
  sql: Sql,
  operation: string,
  ms: number,
  text: string,
  parameters: readonly unknown[],
): Promise<Raw> {
  const statement = sendAlone(sql, text, parameters);
  return bounded(operation, ms, statement.result, () => statement.stop(true));
}

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
export function decode(result: Raw): (string | null)[][] {
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
 * nothing for a moment (ms). postgres.js 3.4.9 keeps a broken connection in
 * its pool until the socket's `close` event, which Deno emits in a later
 * turn than the `error`, and a query handed to it in between never settles
 * and costs the connection (porsager/postgres #1130, #1142): the write is
 * buffered, and the close clears the write timer without forgetting it, so
 * every later write on that connection, its start-up message included,
 * waits behind a flush that never comes (`CONNECT_TIMEOUT` at each
 * reconnect, until a kilobyte has piled up). A connection with a store
 * statement in flight is never handed a query ({@linkcode sendAlone}); the
 * pause is for idle connections that broke at the same time.
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
