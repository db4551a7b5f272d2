/**
 * The driver for postgres.js 3.4, where the store leans on its behaviour
 * beyond its typed API and works around its defects. Each has a test that
 * shows it (`timeout_test.ts`, `fault_test.ts`, `failover_test.ts`,
 * `pgbouncer_test.ts`).
 *
 * - Nothing is written behind a store statement: its `onexecute` returns
 *   `false`, which makes postgres.js set the connection aside ("full")
 *   until the result is read.
 * - A statement is stopped with the store's own cancel request
 *   (`cancel_request.ts`), sent once it is the statement its connection
 *   runs (`query.active`, `query.state`). Its connection, when known (learnt
 *   from `onexecute`), is held from the pool until the cancel has landed and
 *   the statement settled, then ended, so a late cancel reaches no other
 *   query. postgres.js does not call `onexecute` for a statement that waits
 *   for its Describe (a fresh connection's first statements, every statement
 *   with `prepare: false`): those get the cancel alone.
 * - A statement abandoned before it was written is never taken back (3.4's
 *   `cancel()` of a query whose connection is opening costs the pool that
 *   connection); it is written with the payload it has then, which leaves
 *   out every call that timed out.
 * - After a broken connection, a pause (see {@linkcode pauseAfter}).
 * - Results are read raw, skipping the holes a statement failing
 *   mid-result leaves in the next result on its connection.
 *
 * @module
 */

import process from "node:process";
import type { PostgresPool } from "../pool.ts";
import { unrefTimer } from "../_platform.ts";
import { cancelBackend, type CancelTarget } from "./cancel_request.ts";
import type { Driver, Failure, Rows, Statement } from "./driver.ts";
import { abortable, connectionFailure, Stopped } from "./failure.ts";

/** A raw result: each row's columns as bytes (holes possible, see `decode`). */
type Raw = readonly (readonly (Uint8Array | null)[] | undefined)[];

/** The parts of a 3.4 query the driver uses (not typed there). */
interface Query3 extends Promise<Raw> {
  raw(): Query3;
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

/** The part of a 3.4 connection the driver uses. */
interface Connection3 {
  /**
   * Ends the connection: fails its queries with `CONNECTION_DESTROYED`,
   * sends Terminate and reads nothing more. Once its socket closes, the
   * pool opens it again when needed.
   */
  terminate(): void;
  /**
   * What the connection calls, instead of handing itself back to the pool,
   * when its last query ends (postgres.js sets it for `sql.reserve()`).
   */
  reserved: (() => void) & { release?: boolean } | null;
}

/** The parts of a 3.4 pool the driver uses. */
interface Pool3 {
  (strings: TemplateStringsArray, ...args: unknown[]): Query3;
  unsafe(
    text: string,
    args?: unknown[],
    options?: {
      prepare?: boolean;
      onexecute?: (connection: Connection3) => boolean;
    },
  ): Query3;
  json(value: unknown): unknown;
  begin<T>(fn: (tx: Pool3) => Promise<T>): Promise<T>;
  reserve(): Promise<unknown>;
  readonly options: CancelTarget & {
    readonly max: number;
    readonly prepare: boolean;
    readonly connection?: Readonly<Record<string, unknown>>;
  };
}

/**
 * The connection behind each backend key a store statement was written to,
 * learnt when postgres.js reports the write (`onexecute`).
 */
const connections = new WeakMap<object, Connection3>();

/** How often to look again at a written statement not yet running (ms). */
const RETRY_MS = 50;

/** How long to keep waiting for an abandoned statement to start, to stop it (ms). */
const GIVE_UP_MS = 60_000;

/**
 * How long a statement may run on after its cancel request landed before
 * its connection is ended anyway (ms).
 */
const GRACE_MS = 5_000;

/**
 * Connection parameters of libpq that postgres.js 3.4 does not know: from a
 * URL's query string it sends them to the server as settings, which refuses
 * them (42704, "unrecognized configuration parameter"). With what to write
 * instead.
 */
const LIBPQ_ONLY: Readonly<Record<string, string>> = {
  channel_binding:
    "postgres.js 3.4 has no channel binding: drop the parameter, or use " +
    "postgres.js 4, which supports channel_binding=require",
  sslrootcert:
    "postgres.js 3.4 reads no certificate file: drop it and pass the CA as " +
    "`ssl: { ca }` (sslrootcert=system: `ssl: 'verify-full'`), or use " +
    "postgres.js 4, which reads sslrootcert",
  sslcert: "pass the certificate as `ssl: { cert }` (or use postgres.js 4)",
  sslkey: "pass the key as `ssl: { key }` (or use postgres.js 4)",
  require_auth: "postgres.js 3.4 does not check it: drop it, or use " +
    "postgres.js 4, which supports require_auth",
  gssencmode: "postgres.js has no GSSAPI encryption: drop it",
  sslcrl: "pass the CRL as `ssl: { crl }`",
  sslpassword: "pass it as `ssl: { passphrase }`",
  sslsni: "drop it: postgres.js sends SNI for a host name",
  passfile: "pass the password in the URL or PGPASSWORD",
  service: "write the host, port and database in the URL",
};

/**
 * The driver of `pool` if it is a postgres.js 3.4 pool: host and port
 * lists in its options, `reserve()`, and lazy queries with `state` and
 * `active` (read to cancel a statement) but without 4.x's `signal()`.
 *
 * @throws {TypeError} If it is one, with a connection parameter 3.4 would
 * send to the server as a setting (see {@linkcode LIBPQ_ONLY}).
 */
export function postgres3(pool: PostgresPool): Driver | undefined {
  const sql = pool as unknown as Pool3;
  const options = sql.options as Partial<Pool3["options"]> | undefined;
  if (
    typeof options !== "object" || options === null ||
    !Array.isArray(options.host) || !Array.isArray(options.port) ||
    typeof options.max !== "number" || "cancel_timeout" in options ||
    typeof sql.unsafe !== "function" || typeof sql.json !== "function" ||
    typeof sql.begin !== "function" || typeof sql.reserve !== "function"
  ) return undefined;
  // A query is lazy: made and never awaited, it is never sent.
  const probe = sql`select 1` as unknown as Record<string, unknown>;
  if (
    !("state" in probe) || probe.state !== null || probe.active !== false ||
    typeof probe.raw !== "function" || "signal" in probe
  ) return undefined;
  if (!options.ssl && sslModeFromEnvironment()) {
    throw new TypeError(
      "PGSSLMODE is set, but postgres.js 3.4 does not read it: this pool " +
        "would connect without TLS. Put sslmode in the URL " +
        "(?sslmode=require), pass `ssl`, set PGSSL, or use postgres.js 4, " +
        "which reads PGSSLMODE",
    );
  }
  for (const name of Object.keys(options.connection ?? {})) {
    const instead = LIBPQ_ONLY[name];
    if (instead !== undefined) {
      throw new TypeError(
        `the connection parameter ${name} would reach the server as a ` +
          `setting, which it refuses: ${instead}`,
      );
    }
  }
  return driver3(sql);
}

/**
 * PGSSLMODE asking for TLS, as libpq reads it (`disable` and `allow` do
 * not); `undefined` where it is unset or may not be read.
 */
function sslModeFromEnvironment(): string | undefined {
  let mode: string | undefined;
  try {
    mode = process.env.PGSSLMODE;
  } catch {
    return undefined; // no permission to read it: postgres.js did not either
  }
  return mode && mode !== "disable" && mode !== "allow" ? mode : undefined;
}

function driver3(sql: Pool3): Driver {
  const options = sql.options;
  const prepare = options.prepare !== false;

  return {
    label: "postgres.js 3.4",
    connections: options.max,

    send(statement: Statement, signal?: AbortSignal): Promise<Rows> {
      if (signal?.aborted) return Promise.reject(new Stopped());
      let written = false;
      const { payload } = statement;
      const parameters = payload
        ? [sql.json({
          toJSON: () => {
            written = true;
            return payload();
          },
        })]
        : [];
      const query = sql.unsafe(statement.text, parameters, {
        prepare,
        onexecute: (connection) => {
          if (query.state) connections.set(query.state, connection);
          return false;
        },
      }).raw();
      let settled = false;
      const done = () => {
        settled = true;
      };
      query.then(done, done);
      const result = query.then(decode, (error) => {
        throw signal?.aborted ? new Stopped() : error;
      });
      // Stopped, the caller has its answer at once; the statement is
      // stopped in its own time.
      return abortable(
        result,
        signal,
        () => stopStatement(sql, query, () => settled, written),
      );
    },

    transaction(texts, signal) {
      if (signal?.aborted) return Promise.reject(new Stopped());
      return abortable(
        sql.begin(async (tx) => {
          for (const text of texts) await tx.unsafe(text);
        }),
        signal,
      );
    },

    pauseAfter,

    failure(error: unknown): Failure {
      return connectionFailure(error);
    },
  };
}

/**
 * Stops an abandoned statement on the server once it is the statement its
 * connection runs (see the module documentation). A `written` statement is
 * looked at again until it is; one not written (waiting for its Describe)
 * is stopped only if it runs now: written later, it does nothing. Never
 * throws.
 */
function stopStatement(
  sql: Pool3,
  query: Query3,
  settled: () => boolean,
  written: boolean,
): void {
  const until = performance.now() + GIVE_UP_MS;
  const attempt = () => {
    if (settled()) return;
    const { state, active } = query;
    const pid = state?.pid;
    const secret = state?.secret;
    if (
      active === true && typeof pid === "number" && typeof secret === "number"
    ) {
      const connection = connections.get(state!);
      // Held: when the statement ends, the connection is not handed back
      // to the pool, whose next query a late cancel would stop.
      if (connection) {
        connection.reserved = Object.assign(() => {}, { release: true });
      }
      void cancelBackend(sql.options, pid, secret).then(async () => {
        if (!connection) return;
        await settledWithin(query, settled, GRACE_MS);
        connection.terminate();
      });
    } else if (written && performance.now() < until) {
      unrefTimer(setTimeout(attempt, RETRY_MS));
    }
  };
  attempt();
}

/** Resolves when `query` has settled, or after `ms`. */
function settledWithin(
  query: Query3,
  settled: () => boolean,
  ms: number,
): Promise<void> {
  if (settled()) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = unrefTimer(setTimeout(resolve, ms));
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    query.then(done, done);
  });
}

const utf8 = new TextDecoder();

/**
 * The text of every column of a raw result (`.raw()`), skipping holes.
 * Statements read raw bytes, so no type parser and no `transform` of the
 * caller's pool touches a value (a value transform would rewrite hashes,
 * and keys inside claims). postgres.js 3.4 does not reset its row counter
 * when a statement fails while its rows arrive (a server error mid-result,
 * a connection lost mid-result), so the next result on that connection
 * starts with empty slots (porsager/postgres #1119, #1181); the rows after
 * them are the statement's own.
 */
function decode(result: Raw): Rows {
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
 * nothing for a moment (ms). postgres.js 3.4 keeps a broken connection in
 * its pool until the socket's `close` event, which Deno emits in a later
 * turn than the `error`, and a query handed to it in between never settles
 * and costs the connection (porsager/postgres #1130, #1142): the write is
 * buffered, and the close clears the write timer without forgetting it, so
 * every later write on that connection, its start-up message included,
 * waits behind a flush that never comes (`CONNECT_TIMEOUT` at each
 * reconnect, until a kilobyte has piled up). A connection with a store
 * statement in flight is never handed a query (`onexecute`); the pause is
 * for idle connections that broke at the same time.
 */
function pauseAfter(error: unknown): number {
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
