/**
 * Single-use OAuth 2.0 authorization codes on PostgreSQL, through
 * postgres.js.
 *
 * With PKCE mandatory (RFC 7636), the authorization code is the only secret
 * the browser carries, and RFC 6749 §4.1.2 says it must be used at most
 * once. This store enforces that in the database: `take` is one
 * `DELETE ... RETURNING` statement, so of any number of concurrent
 * redemptions, across every process sharing the database, exactly one gets
 * the entry. Codes are stored only as SHA-256 hashes, and every record is
 * validated fail-closed (no defaults, `S256` only).
 *
 * @example Issue and redeem a code
 * ```ts ignore
 * import { Buffer } from "node:buffer";
 * import process from "node:process";
 * import postgres from "postgres";
 * import { createCodeStore, migrate } from "@attesto/code-store";
 *
 * const sql = postgres(process.env.DATABASE_URL!, {
 *   fetch_types: false,
 *   backoff: false,
 *   connect_timeout: 5,
 * });
 * await migrate(sql); // idempotent
 * const store = createCodeStore(sql, { timeoutMs: 5_000 });
 *
 * // At the authorization endpoint, with the request's S256 code_challenge:
 * const code = Buffer.from(crypto.getRandomValues(new Uint8Array(32)))
 *   .toString("base64url");
 * await store.put({
 *   code,
 *   expiresAt: Math.floor(Date.now() / 1000) + 60,
 *   data: {
 *     clientId: "s6BhdRkqt3",
 *     subject: "user-42",
 *     redirectUri: "https://client.example.org/cb",
 *     scope: ["openid", "profile"],
 *     codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
 *     codeChallengeMethod: "S256",
 *   },
 * });
 *
 * // At the token endpoint: take first (the code is spent, whatever follows),
 * // then check the expiry, the client, the redirect URI and the PKCE
 * // verifier (RFC 7636 §4.6) against `entry.data`.
 * const entry = await store.take(code);
 * if (entry === null || entry.expiresAt <= Date.now() / 1000) {
 *   // invalid_grant (RFC 6749 §5.2)
 * }
 * ```
 *
 * @module
 */

export {
  type CodeStore,
  createCodeStore,
  type Repository,
} from "./src/store.ts";
export {
  type CodeStoreOptions,
  DEFAULT_MAX_BATCH,
  DEFAULT_TABLE,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_TOMBSTONE_RETENTION_SECONDS,
} from "./src/options.ts";
export { type CodeRow, fromRecord, toRecord } from "./src/schema.ts";
export { hashCode } from "./src/hash_code.ts";
export {
  DEFAULT_MIGRATE_TIMEOUT_MS,
  migrate,
  type MigrateOptions,
  migrationSql,
} from "./src/migrate.ts";
export {
  DEFAULT_PURGE_BATCH_SIZE,
  DEFAULT_PURGE_TIMEOUT_MS,
  purgeExpired,
  type PurgeOptions,
  type PurgeResult,
} from "./src/purge.ts";
export type { PostgresPool } from "./src/pool.ts";
export {
  CodeStoreError,
  DatabaseError,
  DatabaseUnavailableError,
  DuplicateCodeError,
  InvalidAuthorizationCodeError,
  InvalidRecordError,
  MissingRepositoryError,
  OperationTimeoutError,
  PkceRequiredError,
} from "./src/errors.ts";
export type {
  CodeEntry,
  CodeRecord,
  GrantData,
  JsonObject,
  JsonValue,
  NewCode,
  SpentCode,
  StoredGrantData,
} from "./src/types.ts";
