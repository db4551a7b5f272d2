/**
 * What the database's and the driver's error codes mean, in words.
 *
 * @module
 */

/** SQLSTATEs and driver codes, in words. */
const REASONS: Readonly<Record<string, string>> = {
  "25006": "the server is read-only: a standby, or a failover under way",
  "40001": "a serialization failure",
  "40P01": "a deadlock",
  "42501": "the role lacks a privilege on the tables",
  "42P01": "the table does not exist; run migrate()",
  "42703": "a column is missing; run migrate()",
  "3D000": "the database does not exist",
  "28000": "the role may not connect",
  "28P01": "the password was refused",
  "53300": "the server has no connection slot left",
  "57014": "the statement was cancelled",
  "57P01": "the server is shutting down",
  "57P02": "the server crashed",
  "57P03": "the server is starting or shutting down",
  "ECONNREFUSED": "the connection was refused",
  "ECONNRESET": "the connection was reset",
  "ENOTFOUND": "the host name was not found",
  "EAI_AGAIN": "the host name could not be resolved",
  "ETIMEDOUT": "the connection timed out",
  "CONNECT_TIMEOUT": "connecting timed out",
  "CONNECTION_CLOSED": "the connection was closed",
  "CONNECTION_DESTROYED": "the connection was ended",
  "CONNECTION_ENDED": "the pool was ended",
  "QUEUE_TIMEOUT": "no connection was free within the pool's queue_timeout",
  "QUERY_TIMEOUT": "the pool's query_timeout passed",
};

/**
 * A SQLSTATE or a driver's code, with what it means where known: `"SQLSTATE
 * 42P01: the table does not exist; run migrate()"`.
 */
export function describeReason(reason: string): string {
  const words = REASONS[reason] ??
    (reason.startsWith("08") ? "a connection error" : undefined);
  const label = /^(?=.*[0-9])[0-9A-Z]{5}$/.test(reason)
    ? `SQLSTATE ${reason}`
    : reason;
  return words ? `${label}: ${words}` : label || "an error of the driver";
}
