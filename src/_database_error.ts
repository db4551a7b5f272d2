/**
 * The store's error for what a statement failed with: a
 * {@linkcode DatabaseError} that keeps nothing of the driver's error (which
 * holds the statement's text and parameters).
 *
 * @module
 */

import type { Driver } from "./driver/driver.ts";
import {
  CodeStoreError,
  DatabaseError,
  DatabaseUnavailableError,
} from "./errors.ts";

/**
 * SQLSTATEs of a server that is not taking work now: shutting down or
 * starting (57P01 to 57P03), out of connection slots (53300), read-only (a
 * standby, or a failover under way: 25006), and connection errors (08).
 */
function unavailable(sqlState: string): boolean {
  return sqlState.startsWith("08") || /^57P0[123]$/.test(sqlState) ||
    sqlState === "53300" || sqlState === "25006";
}

/**
 * The error a call of `operation` rejects with when its statement failed
 * with `error`: the store's own errors as they are, anything else as a
 * {@linkcode DatabaseError} (or {@linkcode DatabaseUnavailableError}).
 *
 * @param driver The driver that raised it, which knows its errors.
 * @param operation The operation, such as `"take"`.
 * @param error What the statement failed with.
 * @param sent Whether the statement had been sent to the database.
 */
export function databaseError(
  driver: Driver | undefined,
  operation: string,
  error: unknown,
  sent: boolean,
): CodeStoreError {
  if (error instanceof CodeStoreError) return error;
  const failure = driver?.failure(error) ??
    { kind: "other", reason: "" } as const;
  switch (failure.kind) {
    case "connection":
      return new DatabaseUnavailableError(operation, failure.reason, sent);
    case "server":
      return unavailable(failure.sqlState)
        ? new DatabaseUnavailableError(operation, failure.sqlState, sent)
        : new DatabaseError(operation, failure.sqlState, sent);
    case "stopped":
      return new DatabaseError(operation, "57014", sent);
    default:
      return new DatabaseError(
        operation,
        failure.reason || (error instanceof Error ? error.name : "unknown"),
        sent,
      );
  }
}
