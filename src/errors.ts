/**
 * Errors raised by the code store. Each has a stable {@linkcode CodeStoreError.code}
 * to branch on, and `name` equal to its class name.
 *
 * No message or property of these errors ever holds a plaintext
 * authorization code, a code hash, or the database server's detail text;
 * a database error holds nothing of the statement either (no SQL, table
 * name or parameter) and has no `cause`.
 *
 * @module
 */

import { describeReason } from "./_reasons.ts";

/**
 * Base class of every error the store raises: its own, and what the
 * database or the driver answered ({@linkcode DatabaseError}), which never
 * reaches the caller as the driver raised it.
 *
 * @example Branch on the stable code
 * ```ts
 * import { CodeStoreError, InvalidRecordError } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * const error: unknown = new InvalidRecordError("data.scope", "must be an array");
 * let field = "";
 * if (error instanceof CodeStoreError && error.code === "ERR_INVALID_RECORD") {
 *   field = (error as InvalidRecordError).field;
 * }
 * assertEquals(field, "data.scope");
 * ```
 */
export class CodeStoreError extends Error {
  /** A stable, machine-readable identifier of the error kind. */
  readonly code: string;

  /**
   * Creates the error.
   *
   * @param code The stable error code.
   * @param message A description that holds no secret.
   */
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * `put` was given a code whose hash is already stored. Authorization codes
 * must be unique, so this is a bug in the caller's code generator (or a
 * replayed `put`); the stored entry is left untouched. The server's
 * `detail` (which names the key) is deliberately not carried over.
 *
 * @example
 * ```ts
 * import { DuplicateCodeError } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * const error = new DuplicateCodeError();
 * assertEquals(error.code, "ERR_DUPLICATE_CODE");
 * assertEquals(error.name, "DuplicateCodeError");
 * ```
 */
export class DuplicateCodeError extends CodeStoreError {
  /** The stable code of this error kind. */
  static readonly code = "ERR_DUPLICATE_CODE";

  /** Creates the error; it carries no detail about the code. */
  constructor() {
    super(
      DuplicateCodeError.code,
      "an authorization code with the same hash is already stored; " +
        "put() never overwrites an entry",
    );
  }
}

/**
 * A record (the input of `put`, a `CodeEntry` or a `CodeRow`), or the grant
 * id given to `revokeGrant`, failed validation. Nothing was written, and no
 * query was sent. {@linkcode InvalidRecordError.field}
 * names the offending field; the message explains the rule, never the value.
 *
 * @example
 * ```ts
 * import { InvalidRecordError } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * const error = new InvalidRecordError("data.codeChallengeMethod", 'must be "S256"');
 * assertEquals(error.field, "data.codeChallengeMethod");
 * assertEquals(error.message, 'invalid data.codeChallengeMethod: must be "S256"');
 * ```
 */
export class InvalidRecordError extends CodeStoreError {
  /** The stable code of this error kind. */
  static readonly code = "ERR_INVALID_RECORD";

  /** The path of the offending field, such as `"data.scope"`. */
  readonly field: string;

  /**
   * Creates the error.
   *
   * @param field The path of the offending field.
   * @param rule The rule it broke, without its value.
   */
  constructor(field: string, rule: string) {
    super(InvalidRecordError.code, `invalid ${field}: ${rule}`);
    this.field = field;
  }
}

/**
 * The store's repository function returned no postgres.js `Sql` instance at
 * call time. The store fails closed: nothing is written and no entry is
 * returned.
 *
 * @example
 * ```ts
 * import { MissingRepositoryError } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * const error = new MissingRepositoryError("returned undefined");
 * assertEquals(error.code, "ERR_MISSING_REPOSITORY");
 * ```
 */
export class MissingRepositoryError extends CodeStoreError {
  /** The stable code of this error kind. */
  static readonly code = "ERR_MISSING_REPOSITORY";

  /**
   * Creates the error.
   *
   * @param reason What the repository function yielded instead.
   */
  constructor(reason: string) {
    super(
      MissingRepositoryError.code,
      `no database: the code store's repository function ${reason}`,
    );
  }
}

/**
 * A call got no answer within its `timeoutMs`. {@linkcode sent} tells
 * whether its statement had reached the database: if not, the call had no
 * effect (a `take` spent nothing, a `put` stored nothing) and never will;
 * if so, it may or may not have taken effect (a `take` may have spent the
 * code, a `put` may have stored it), and the statement is cancelled once no
 * call in it still waits. Either way, no entry is ever returned to two
 * callers.
 *
 * @example
 * ```ts
 * import { OperationTimeoutError } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * const error = new OperationTimeoutError("take", 5000, false);
 * assertEquals(error.code, "ERR_OPERATION_TIMEOUT");
 * assertEquals(error.operation, "take");
 * assertEquals(error.timeoutMs, 5000);
 * assertEquals(error.sent, false);
 * ```
 */
export class OperationTimeoutError extends CodeStoreError {
  /** The stable code of this error kind. */
  static readonly code = "ERR_OPERATION_TIMEOUT";

  /** The operation that timed out: `"take"`, `"put"`, `"migrate"`, ... */
  readonly operation: string;

  /** The `timeoutMs` that elapsed, in milliseconds. */
  readonly timeoutMs: number;

  /**
   * Whether the call's statement had been sent to the database: `false`
   * means it had no effect.
   */
  readonly sent: boolean;

  /**
   * Creates the error.
   *
   * @param operation The store operation, such as `"take"`.
   * @param timeoutMs The timeout, in milliseconds.
   * @param sent Whether the statement had been sent to the database.
   */
  constructor(operation: string, timeoutMs: number, sent: boolean) {
    super(
      OperationTimeoutError.code,
      `${operation}() got no answer from the database within ${timeoutMs} ms; ` +
        (sent
          ? "its statement had been sent and may or may not have taken effect"
          : "its statement had not been sent and has no effect"),
    );
    this.operation = operation;
    this.timeoutMs = timeoutMs;
    this.sent = sent;
  }
}

/**
 * Thrown by the server adapters (`/oidc-provider`, `/openauth`,
 * `/ts-oauth2-server`, `/node-oauth2-server`) when the server issues an
 * authorization code without an S256 PKCE challenge, which the store
 * refuses (the code would be the only secret a browser carries, RFC 7636);
 * nothing is stored. Configure the server to require PKCE so that it never
 * happens.
 *
 * It carries the OAuth error (`invalid_request`, RFC 6749 §4.1.2.1) in the
 * fields each server reads: ts-oauth2-server answers `400 invalid_request`
 * from `oauth`, `status`, `errorType` and `errorDescription`. oidc-provider
 * sends an exposed error's `message` as the OAuth `error`, so the
 * oidc-provider adapter creates it with the message `"invalid_request"`
 * (see the constructor); every other adapter keeps the default message, a
 * sentence. OpenAuth and node-oauth2-server answer any error that is not
 * of their own classes as `server_error`, with the message as its
 * description.
 *
 * @example
 * ```ts
 * import { PkceRequiredError } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * const error = new PkceRequiredError();
 * assertEquals(error.code, "ERR_PKCE_REQUIRED");
 * assertEquals(error.error, "invalid_request");
 * assertEquals(
 *   error.message,
 *   "PKCE with S256 is required (RFC 7636): the authorization request must " +
 *     "send code_challenge with code_challenge_method=S256; the " +
 *     "authorization code was not stored",
 * );
 * ```
 */
export class PkceRequiredError extends CodeStoreError {
  /** The stable code of this error kind. */
  static readonly code = "ERR_PKCE_REQUIRED";
  /** The OAuth error code (RFC 6749 §4.1.2.1). */
  readonly error = "invalid_request";
  /** The OAuth error description. */
  readonly error_description: string =
    "PKCE with S256 is required (RFC 7636): send code_challenge and " +
    "code_challenge_method=S256";
  /** For oidc-provider: the HTTP status. */
  readonly status = 400;
  /** For oidc-provider: the HTTP status. */
  readonly statusCode = 400;
  /** For oidc-provider: the error may be shown to the client. */
  readonly expose = true;
  /** For oidc-provider: the error may be sent to the redirect URI. */
  readonly allow_redirect = true;
  /** For ts-oauth2-server: an OAuth error, answered as such. */
  readonly oauth = true;
  /** For ts-oauth2-server: the OAuth error code. */
  readonly errorType = "invalid_request";
  /** For ts-oauth2-server: the OAuth error description. */
  readonly errorDescription: string = this.error_description;

  /**
   * Creates the error.
   *
   * @param message The message: by default a sentence. The oidc-provider
   * adapter passes `"invalid_request"`, since oidc-provider sends the
   * message of an exposed error as the OAuth `error` code.
   */
  constructor(
    message: string =
      "PKCE with S256 is required (RFC 7636): the authorization request " +
      "must send code_challenge with code_challenge_method=S256; the " +
      "authorization code was not stored",
  ) {
    super(PkceRequiredError.code, message);
  }
}

/**
 * A call failed in the database: the server answered with an error
 * ({@linkcode DatabaseError.reason} is its SQLSTATE, such as `"42P01"`), or
 * the driver failed otherwise. It carries nothing of the statement: no SQL,
 * no table name, no parameter (the driver's own error, which does, is not
 * kept, not even as `cause`). {@linkcode DatabaseError.sent} tells whether
 * the statement had reached the database: if not, the call had no effect.
 *
 * @example
 * ```ts
 * import { DatabaseError } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * const error = new DatabaseError("take", "42P01", true);
 * assertEquals(error.code, "ERR_DATABASE");
 * assertEquals(error.reason, "42P01");
 * assertEquals(
 *   error.message,
 *   "take() failed in the database (SQLSTATE 42P01: the table does not " +
 *     "exist; run migrate()); its statement had been sent and may or may " +
 *     "not have taken effect",
 * );
 * ```
 */
export class DatabaseError extends CodeStoreError {
  /** The stable code of this error kind. */
  static readonly code: string = "ERR_DATABASE";

  /** The operation that failed: `"take"`, `"put"`, `"migrate"`, ... */
  readonly operation: string;

  /**
   * What failed: the SQLSTATE the server answered with (`"25006"`), or the
   * driver's or the socket's code (`"ECONNREFUSED"`, `"CONNECTION_CLOSED"`).
   */
  readonly reason: string;

  /**
   * Whether the call's statement had been sent to the database: `false`
   * means it had no effect (a `take` spent nothing, a `put` stored nothing).
   */
  readonly sent: boolean;

  /**
   * Creates the error.
   *
   * @param operation The store operation, such as `"take"`.
   * @param reason The SQLSTATE or the driver's code.
   * @param sent Whether the statement had been sent to the database.
   */
  constructor(operation: string, reason: string, sent: boolean) {
    const unavailable = new.target === DatabaseUnavailableError;
    super(
      unavailable ? DatabaseUnavailableError.code : DatabaseError.code,
      `${operation}() ${
        unavailable
          ? `could not get an answer from the database (${
            describeReason(reason)
          })`
          : `failed in the database (${describeReason(reason)})`
      }; ` +
        (sent
          ? "its statement had been sent and may or may not have taken effect"
          : "its statement had not been sent and has no effect"),
    );
    this.operation = operation;
    this.reason = reason;
    this.sent = sent;
  }
}

/**
 * A call got no answer from the database: it could not be reached
 * (`ECONNREFUSED`, a timeout connecting), the connection was lost
 * (`CONNECTION_CLOSED`, `ECONNRESET`), the pool was ended
 * (`CONNECTION_ENDED`), or the server is not taking work (shutting down,
 * read-only during a failover, out of connections). Retry later: with
 * `sent` false the call had no effect; otherwise it may or may not have
 * (a `take` may have spent the code, and it is returned to no one).
 *
 * @example
 * ```ts
 * import { DatabaseError, DatabaseUnavailableError } from "@attesto/code-store";
 * import { assert, assertEquals } from "@std/assert";
 *
 * const error = new DatabaseUnavailableError("put", "ECONNREFUSED", false);
 * assertEquals(error.code, "ERR_DATABASE_UNAVAILABLE");
 * assert(error instanceof DatabaseError);
 * assertEquals(error.sent, false);
 * ```
 */
export class DatabaseUnavailableError extends DatabaseError {
  /** The stable code of this error kind. */
  static override readonly code: string = "ERR_DATABASE_UNAVAILABLE";
}

/**
 * An authorization code presented at the token endpoint cannot be
 * redeemed: never issued, already redeemed, revoked or expired (RFC 6749
 * §5.2, `invalid_grant`). Thrown by the ts-oauth2-server adapter's
 * `getByIdentifier`; it carries the fields ts-oauth2-server reads (`oauth`,
 * `status`, `errorType`, `errorDescription`), so the token request gets
 * `400 invalid_grant`, not a server error. (Not to be confused with the MCP
 * SDK's `InvalidGrantError`, an OAuth error class of that SDK for any
 * grant.)
 *
 * @example
 * ```ts
 * import { CodeStoreError, InvalidAuthorizationCodeError } from "@attesto/code-store";
 * import { assert, assertEquals } from "@std/assert";
 *
 * const error = new InvalidAuthorizationCodeError();
 * assert(error instanceof CodeStoreError);
 * assertEquals(error.code, "ERR_INVALID_AUTHORIZATION_CODE");
 * assertEquals(error.name, "InvalidAuthorizationCodeError");
 * assertEquals(error.errorType, "invalid_grant");
 * assertEquals(error.status, 400);
 * ```
 */
export class InvalidAuthorizationCodeError extends CodeStoreError {
  /** The stable code of this error kind. */
  static readonly code = "ERR_INVALID_AUTHORIZATION_CODE";
  /** The OAuth error code (RFC 6749 §5.2). */
  readonly error = "invalid_grant";
  /** The OAuth error description. */
  readonly error_description: string =
    "The authorization code is invalid, already used, revoked or expired";
  /** The HTTP status. */
  readonly status = 400;
  /** The HTTP status. */
  readonly statusCode = 400;
  /** For ts-oauth2-server: an OAuth error, answered as such. */
  readonly oauth = true;
  /** For ts-oauth2-server: the OAuth error code. */
  readonly errorType = "invalid_grant";
  /** For ts-oauth2-server: the OAuth error description. */
  readonly errorDescription: string = this.error_description;

  /** Creates the error; it carries no detail about the code. */
  constructor() {
    super(
      InvalidAuthorizationCodeError.code,
      "the authorization code cannot be redeemed: it was never issued, " +
        "was already redeemed or revoked, or has expired",
    );
  }
}
