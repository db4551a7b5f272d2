/**
 * The driver for postgres.js 4.x, on its public API.
 *
 * A store statement runs on a connection of its own for its duration
 * (`sql.reserve()`), so nothing is pipelined behind it; a statement still
 * waiting for a connection is withdrawn through `reserve().signal()`; a
 * running one is cancelled, and its connection is released only once the
 * statement has settled and the cancel request has reached the server
 * (postgres.js 4 warns that a cancel sent as a query finishes can cancel
 * the query pipelined after it: here there is none, and the next one is
 * sent only after the cancel has landed, `timeout_test.ts` shows it).
 *
 * The cancel request is the store's own (`cancel_request.ts`): 4.2.0's
 * `query.cancel()` ends its socket with the request, which PgBouncer drops
 * (`pgbouncer_test.ts` shows the statement running on).
 *
 * @module
 */

import type { PostgresPool } from "../pool.ts";
import {
  cancelBackend,
  type CancelOutcome,
  type CancelTarget,
} from "./cancel_request.ts";
import type { Driver, Failure, Rows, Statement } from "./driver.ts";
import { abortable, connectionFailure, Stopped } from "./failure.ts";
import { setImmediate } from "node:timers";
import { unrefTimer } from "../_platform.ts";

/** The parts of a 4.x query the driver uses. */
interface Query4 extends Promise<unknown> {
  values(): Query4;
  transform(transform: false): Query4;
  execute(): Query4;
  cancel(): Promise<void>;
  signal(signal: AbortSignal | undefined): Query4;
  /** The backend it was queued on (`{ pid, secret }`), `null` before. */
  readonly state: { readonly pid?: unknown; readonly secret?: unknown } | null;
  /** Whether it is the statement its connection runs now. */
  readonly active: boolean;
  /** Whether it has settled. */
  readonly settled: boolean;
}

/** A reserved connection of a 4.x pool. */
interface Reserved4 {
  unsafe(text: string, args: unknown[], options: { prepare: boolean }): Query4;
  release(): void;
}

/** A waiting `reserve()` or `begin()`. */
interface Leasing4<T> extends Promise<T> {
  signal(signal: AbortSignal | undefined): Leasing4<T>;
}

/** The parts of a 4.x pool the driver uses. */
interface Pool4 {
  (strings: TemplateStringsArray, ...args: unknown[]): Query4;
  unsafe(text: string, args?: unknown[], options?: object): Query4;
  json(value: unknown): unknown;
  reserve(): Leasing4<Reserved4>;
  begin<T>(fn: (tx: Pool4) => Promise<T>): Leasing4<T>;
  readonly options: CancelTarget & {
    readonly max: number;
    readonly prepare: boolean;
    readonly max_pipeline: number;
    readonly cancel_timeout: number;
    readonly queue_timeout: number;
    readonly query_timeout: number;
  };
}

/**
 * How long a statement may run on after its cancel request landed before
 * its connection is ended (ms): through 4.x's own `cancel()`, whose
 * `cancel_timeout` ends a connection that does not answer it.
 */
const GRACE_MS = 5_000;

/**
 * The driver of `pool` if it is a postgres.js 4.x pool: options 4.x parses
 * (`max_pipeline`, `cancel_timeout`, `queue_timeout`, `query_timeout`, host
 * and port lists), a `stats` getter, and queries with `signal()`,
 * `cancel()`, `values()` and `transform()`.
 */
export function postgres4(pool: PostgresPool): Driver | undefined {
  const sql = pool as unknown as Pool4;
  const options = sql.options as Partial<Pool4["options"]> | undefined;
  if (
    typeof options !== "object" || options === null ||
    typeof options.max_pipeline !== "number" ||
    typeof options.cancel_timeout !== "number" ||
    typeof options.queue_timeout !== "number" ||
    typeof options.query_timeout !== "number" ||
    !Array.isArray(options.host) || !Array.isArray(options.port) ||
    typeof options.max !== "number" ||
    typeof sql.unsafe !== "function" || typeof sql.json !== "function" ||
    typeof sql.reserve !== "function" || typeof sql.begin !== "function" ||
    typeof Object.getOwnPropertyDescriptor(sql, "stats")?.get !== "function"
  ) return undefined;
  // A query is lazy: made and never awaited, it is never sent.
  const probe = sql.unsafe("select 1") as unknown as Record<string, unknown>;
  for (const method of ["signal", "cancel", "values", "transform", "raw"]) {
    if (typeof probe[method] !== "function") return undefined;
  }
  if (probe.state !== null || probe.active !== false) return undefined;
  return driver4(sql);
}

function driver4(sql: Pool4): Driver {
  const options = sql.options;
  const prepare = options.prepare !== false;

  /**
   * Cancels `query` on the server if it runs there now (see
   * {@linkcode cancelBackend} for the outcome; `"failed"` when there was
   * nothing to cancel). If it still runs `GRACE_MS` after the request
   * landed, 4.x's own `cancel()` ends its connection after its
   * `cancel_timeout`.
   */
  const cancel = async (query: Query4): Promise<CancelOutcome> => {
    const { state, active } = query;
    const pid = state?.pid;
    const secret = state?.secret;
    if (
      query.settled || !active || typeof pid !== "number" ||
      typeof secret !== "number"
    ) return "failed";
    const outcome = await cancelBackend(options, pid, secret);
    if (outcome === "delivered" && !query.settled) {
      unrefTimer(setTimeout(() => {
        if (!query.settled) query.cancel().catch(() => {});
      }, GRACE_MS));
    }
    return outcome;
  };

  /**
   * Reserved connections whose statement ended well, kept until the event
   * loop's next turn (`setImmediate`): a statement sent in the meantime (the
   * next batch of a busy store, the next take of a caller in a loop) reuses
   * one instead of reserving again. Then they go back to the pool.
   */
  const idle: Reserved4[] = [];
  let releasing = false;
  const keep = (reserved: Reserved4) => {
    idle.push(reserved);
    if (releasing) return;
    releasing = true;
    // Not setTimeout(0): at least a millisecond, and an event-loop wakeup.
    setImmediate(() => {
      releasing = false;
      for (const each of idle.splice(0)) each.release();
    });
  };

  /** Runs `statement` on `reserved`, then keeps or releases it. */
  const run = (
    reserved: Reserved4,
    statement: Statement,
    signal: AbortSignal | undefined,
  ): Promise<Rows> => {
    const { payload } = statement;
    const query = reserved.unsafe(
      statement.text,
      payload ? [sql.json({ toJSON: payload })] : [],
      { prepare },
    ).values().transform(false).execute();
    let cancelled: Promise<CancelOutcome> | undefined;
    const result = query.then((result) => {
      // The connection takes its next statement once a cancel sent to it
      // has landed: sent as this one ended, it would cancel that one.
      if (cancelled) {
        void cancelled.then((outcome) => release(reserved, outcome));
      } else keep(reserved);
      return rows(result);
    }, (error) => {
      if (cancelled) {
        void cancelled.then((outcome) => release(reserved, outcome));
      } else reserved.release();
      throw signal?.aborted ? new Stopped() : error;
    });
    // Stopped, the caller has its answer at once; the statement's end and
    // the connection's release follow in their own time.
    return abortable(result, signal, () => {
      cancelled = cancel(query);
    });
  };

  return {
    label: "postgres.js 4",
    connections: options.max,

    send(statement: Statement, signal?: AbortSignal): Promise<Rows> {
      if (signal?.aborted) return Promise.reject(new Stopped());
      const kept = idle.pop();
      if (kept) return run(kept, statement, signal);
      return sql.reserve().signal(signal).then((reserved) => {
        if (!signal?.aborted) return run(reserved, statement, signal);
        reserved.release();
        throw new Stopped();
      }, (error) => {
        throw signal?.aborted ? new Stopped() : error;
      });
    },

    transaction(texts, signal) {
      if (signal?.aborted) return Promise.reject(new Stopped());
      const work = sql.begin(async (tx) => {
        for (const text of texts) await tx.unsafe(text);
      }).signal(signal);
      return abortable(work, signal);
    },

    pauseAfter: () => 0,

    failure(error: unknown): Failure {
      return connectionFailure(error);
    },
  };
}

/**
 * Gives a connection back after a cancel request to it. One that may still
 * land (`"unknown"`) must not reach another statement: the connection gets
 * a `begin`, which either absorbs it (57014: the connection is clean) or
 * leaves the connection in a transaction, and 4.x closes a reserved
 * connection released in a transaction.
 */
async function release(reserved: Reserved4, outcome: CancelOutcome) {
  if (outcome === "unknown") {
    await reserved.unsafe("begin", [], { prepare: false }).catch(() => {});
  }
  reserved.release();
}

/** A 4.x `values()` result: rows of text (the statements cast to text). */
function rows(result: unknown): Rows {
  return result as Rows;
}
