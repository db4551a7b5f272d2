/**
 * What the errors of either postgres.js major mean to the store.
 *
 * @module
 */

import type { Failure } from "./driver.ts";

/**
 * A statement stopped because its signal aborted. It holds nothing of the
 * statement.
 */
export class Stopped extends Error {
  /** Creates the error. */
  constructor() {
    super("the statement was stopped");
    this.name = "Stopped";
  }
}

/**
 * Codes of postgres.js and of Node-style sockets for "no answer": the
 * database could not be reached, the connection was lost, or the pool was
 * ended (or, with 4.x's own timeouts, the query gave up waiting).
 */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EHOSTDOWN",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "QUEUE_TIMEOUT",
  "QUERY_TIMEOUT",
  "CANCEL_UNANSWERED",
  "SSL_NOT_SUPPORTED",
  "CHANNEL_BINDING_REQUIRED",
  "AUTH_METHOD_REFUSED",
]);

/** A SQLSTATE: five digits or upper-case letters. */
const SQLSTATE = /^[0-9A-Z]{5}$/;

/**
 * What `error` was, for either major: a server error (a `PostgresError`,
 * with its SQLSTATE), no answer (a connection error), a stop, or other.
 */
export function connectionFailure(error: unknown): Failure {
  if (error instanceof Stopped) return { kind: "stopped" };
  const e = error as { code?: unknown; severity?: unknown } | null;
  const code = typeof e?.code === "string" ? e.code : "";
  if (SQLSTATE.test(code) && typeof e?.severity === "string") {
    return { kind: "server", sqlState: code };
  }
  if (CONNECTION_CODES.has(code)) return { kind: "connection", reason: code };
  return { kind: "other", reason: code };
}

/**
 * `work`, or a rejection with {@linkcode Stopped} as soon as `signal`
 * aborts, when `stop` is called (once) to stop the work in its own time.
 * One listener, removed as `work` settles.
 */
export function abortable<T>(
  work: Promise<T>,
  signal?: AbortSignal,
  stop?: () => void,
): Promise<T> {
  if (!signal) return work;
  return new Promise<T>((resolve, reject) => {
    // Rejected first: a stop that throws cannot keep the caller waiting.
    // Its callbacks run later, after `stop` has marked the work stopped.
    const abort = () => {
      reject(new Stopped());
      stop?.();
    };
    signal.addEventListener("abort", abort, { once: true });
    work.then((value) => {
      signal.removeEventListener("abort", abort);
      resolve(value);
    }, (error) => {
      signal.removeEventListener("abort", abort);
      reject(error);
    });
  });
}
