/**
 * `createCodeStore`: single-use authorization codes on PostgreSQL.
 *
 * @module
 */

import { databaseError } from "./_database_error.ts";
import { type Driver, driverOf, SUPPORTED } from "./driver/driver.ts";
import type { PostgresPool } from "./pool.ts";
import { promised } from "./_promised.ts";
import { coalescer, type Quiet, Slots } from "./coalesce.ts";
import { MissingRepositoryError, OperationTimeoutError } from "./errors.ts";
import { grantIdentifier } from "./_fields.ts";
import { hashCode, presentedHash } from "./hash_code.ts";
import { type CodeRow, rowOf, validateNewCode } from "./schema.ts";
import {
  deleteGrants,
  deleteRows,
  findTombstones,
  insertRows,
  type Tables,
} from "./statements.ts";
import {
  type CodeStoreOptions,
  storeConnections,
  type StoreSettings,
  storeSettings,
} from "./options.ts";
import type { CodeEntry, NewCode, SpentCode } from "./types.ts";

/**
 * Where the store finds its database: a postgres.js pool (3.4 or 4.x), or a
 * function returning one, called on every operation (so a host can create
 * its pool lazily, as on Deno Deploy). A function that returns no pool
 * makes the operation reject with {@linkcode MissingRepositoryError}.
 */
export type Repository =
  | PostgresPool
  | (() => PostgresPool | undefined | null);

/**
 * A store of single-use authorization codes (RFC 6749 §4.1.2: "The client
 * MUST NOT use the authorization code more than once").
 *
 * Only the SHA-256 hash of a code reaches the database; the plaintext never
 * appears in a row, a query, a log line or an error.
 */
export interface CodeStore {
  /**
   * Stores a freshly issued code with its grant. A plain `INSERT`: an entry
   * is never overwritten.
   *
   * @param input The plaintext code, its grant and its expiry.
   * @returns When the entry is durably stored.
   * @throws {InvalidRecordError} If the input breaks a rule (checked before
   * any query); nothing is written.
   * @throws {DuplicateCodeError} If a code with the same hash is stored; the
   * stored entry is left untouched.
   * @throws {MissingRepositoryError} If the repository function yields no
   * database; nothing is written.
   * @throws {OperationTimeoutError} If the database did not answer in time.
   * @throws {DatabaseError} If the database failed the statement, or
   * ({@linkcode DatabaseUnavailableError}) gave no answer; `sent` false: no
   * effect.
   */
  put(input: NewCode): Promise<void>;

  /**
   * Redeems a code: deletes its entry and returns it, in one
   * `DELETE ... RETURNING` statement. Of any number of concurrent calls with
   * the same code, in any number of processes sharing the database, exactly
   * one gets the entry; the others get `null`.
   *
   * A code presented once is spent, even if the caller then rejects the
   * request. Expiry is not checked here: an expired entry is consumed and
   * returned, and the caller must compare `expiresAt` with the clock.
   *
   * @param code The plaintext code presented by the client.
   * @returns The entry, or `null` if no such code is stored (never issued,
   * already redeemed, or a string no server could have issued, which is
   * answered without a query).
   * @throws {TypeError} If `code` is not a string.
   * @throws {MissingRepositoryError} If the repository function yields no
   * database.
   * @throws {InvalidRecordError} If the stored row breaks the schema (it was
   * written by other means); the code is spent.
   * @throws {OperationTimeoutError} If the database did not answer in time:
   * with `sent` false the code is not spent; otherwise it may or may not
   * be, and is never returned to anyone else.
   * @throws {DatabaseError} If the database failed the statement, or
   * ({@linkcode DatabaseUnavailableError}) gave no answer: with `sent` false
   * the code is not spent; otherwise it may or may not be, and is never
   * returned to anyone else.
   */
  take(code: string): Promise<CodeEntry | null>;

  /**
   * Tells whether a code was already redeemed, for a caller whose `take`
   * returned `null`: the tombstone `take` wrote in the same statement that
   * spent the code (so every loser of a race sees the winner's), with what
   * is needed to revoke the tokens issued from it (RFC 6749 §4.1.2, §10.5).
   * As OAuth 2.1 cautions, revoke only when the replayed request is
   * otherwise valid (the code's client, authenticated as it must be, the
   * same redirect URI, a matching PKCE verifier; OWASP ASVS 10.4.2: "the
   * second valid request"), so that a forged replay of a leaked code cannot
   * revoke someone else's tokens.
   *
   * @param code The plaintext code presented again.
   * @returns The tombstone, or `null` for a code never issued, not yet
   * redeemed, or whose tombstone has expired.
   * @throws {TypeError} If `code` is not a string.
   * @throws {MissingRepositoryError} If the repository function yields no
   * database.
   * @throws {OperationTimeoutError} If the database did not answer in time.
   * @throws {DatabaseError} If the database failed the statement or gave
   * no answer.
   */
  spent(code: string): Promise<SpentCode | null>;

  /**
   * Deletes the codes of a grant that are still stored, so that none of
   * them can be redeemed any more: for a grant being revoked (a replayed
   * code, RFC 6749 §4.1.2 and §10.5; a user withdrawing consent). The codes
   * get no tombstone: they were revoked, not redeemed.
   *
   * @param grantId The `grantId` the codes were stored with.
   * @returns How many codes were deleted.
   * @throws {TypeError} If `grantId` is not a string.
   * @throws {InvalidRecordError} If `grantId` breaks the rule `put` applies
   * to `data.grantId` (1 to 1,024 characters of well-formed Unicode, no
   * control character), checked before any query: no code could have been
   * stored with it.
   * @throws {MissingRepositoryError} If the repository function yields no
   * database.
   * @throws {OperationTimeoutError} If the database did not answer in time.
   * @throws {DatabaseError} If the database failed the statement or gave
   * no answer.
   */
  revokeGrant(grantId: string): Promise<number>;
}

/**
 * Creates a code store on a PostgreSQL table (see `migrate`).
 *
 * The store works with any postgres.js options: its statements take their
 * inputs as one `jsonb` parameter and read raw bytes (an entry comes back as
 * one JSON text column), so `prepare: false` (for PgBouncer) and
 * `fetch_types: false` are fine, and column or value `transform`s never
 * touch an entry.
 *
 * @param repo A postgres.js pool (3.4 or 4.x), or a function returning one
 * (called on every operation).
 * @param options The table, the timeout, coalescing, the connections it
 * may occupy and tombstone retention.
 * @returns The store: `put`, `take`, `spent` and `revokeGrant` closures.
 * @throws {TypeError} If `repo` is missing, not a function, or a pool of
 * no supported postgres.js version (the message names them),
 * `options.table` is not a valid identifier, an option is unknown, or a
 * value is of the wrong type.
 * @throws {RangeError} If a number is out of range.
 *
 * @example
 * ```ts ignore
 * import { Buffer } from "node:buffer";
 * import process from "node:process";
 * import postgres from "postgres";
 * import { createCodeStore, migrate } from "@attesto/code-store";
 *
 * const sql = postgres(process.env.DATABASE_URL!);
 * await migrate(sql);
 * const store = createCodeStore(sql);
 *
 * const code = Buffer.from(crypto.getRandomValues(new Uint8Array(32)))
 *   .toString("base64url");
 * await store.put({
 *   code,
 *   expiresAt: Math.floor(Date.now() / 1000) + 60,
 *   data: {
 *     clientId: "s6BhdRkqt3",
 *     subject: "user-42",
 *     redirectUri: "https://client.example.org/cb",
 *     scope: ["openid"],
 *     codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
 *     codeChallengeMethod: "S256",
 *   },
 * });
 *
 * const entry = await store.take(code); // the entry
 * const again = await store.take(code); // null: spent
 * ```
 */
export function createCodeStore(
  repo: Repository,
  options: CodeStoreOptions = {},
): CodeStore {
  if (repo === undefined || repo === null) {
    throw new TypeError(
      "createCodeStore needs a postgres.js pool or a function returning " +
        `one (${SUPPORTED}); a store without a database fails closed`,
    );
  }
  if (typeof repo !== "function") {
    throw new TypeError(
      "createCodeStore: repo must be a postgres.js pool or a function " +
        `returning one (${SUPPORTED}), not a ${typeof repo}`,
    );
  }
  const settings = storeSettings(options);
  const tables: Tables = {
    codes: settings.table.qualified,
    spent: settings.table.spent,
    retention: settings.retentionSeconds,
  };

  // A pool given directly is recognised now: a wrong one fails here.
  const given = isPool(repo) ? driverOf(repo, "createCodeStore") : undefined;
  const database: () => PostgresPool = given
    ? () => repo as PostgresPool
    : () => {
      const pool = (repo as () => unknown)();
      if (!isPool(pool)) throw new MissingRepositoryError(describe(pool));
      return pool;
    };
  // One set of statements per pool (a repository function may return
  // several), each with its own queues and deadlines; a pool is recognised
  // when its statements are made, on its first use.
  const perPool = new WeakMap<PostgresPool, Statements>();
  const statements = (pool: PostgresPool): Statements => {
    let found = perPool.get(pool);
    if (!found) {
      const driver = driverOf(pool, "createCodeStore");
      found = statementsFor(driver, tables, settings);
      perPool.set(pool, found);
    }
    return found;
  };
  if (given) statements(repo as PostgresPool);

  return {
    put: (input: NewCode): Promise<void> =>
      promised(() => {
        const { code, data, expiresAt } = validateNewCode(input);
        const pool = database();
        const row = rowOf({ codeHash: hashCode(code), data, expiresAt });
        return statements(pool).put(row);
      }),

    // The hot path: no closure per call, and the coalescer's own promise.
    take(code: string): Promise<CodeEntry | null> {
      let hash: string | undefined;
      let run: Statements;
      try {
        hash = presentedHash(code);
        run = statements(database());
      } catch (error) {
        return Promise.reject(error);
      }
      return hash ? run.take(hash) : NOTHING;
    },

    spent: (code: string): Promise<SpentCode | null> =>
      promised(() => {
        const hash = presentedHash(code);
        const pool = database();
        return hash ? statements(pool).spent(hash) : null;
      }),

    revokeGrant: (grantId: string): Promise<number> =>
      promised(() => {
        checkGrantId(grantId);
        return statements(database()).revokeGrant(grantId);
      }),
  };
}

/** `take`'s answer to a code no server could have issued. */
const NOTHING: Promise<null> = Promise.resolve(null);

/** How the store runs its operations on one pool. */
interface Statements {
  readonly put: (row: CodeRow) => Promise<void>;
  readonly take: (hash: string) => Promise<CodeEntry | null>;
  readonly spent: (hash: string) => Promise<SpentCode | null>;
  readonly revokeGrant: (grantId: string) => Promise<number>;
}

/**
 * Every operation goes through a coalescer, which keeps each call's
 * deadline; the four share the store's connections on the pool. Without
 * coalescing, each call is a batch of one.
 */
function statementsFor(
  driver: Driver,
  tables: Tables,
  settings: StoreSettings,
): Statements {
  const { timeoutMs: timeout, maxBatch } = settings;
  const quiet: Quiet = { after: driver.pauseAfter, until: 0 };
  const connections = storeConnections(
    settings.maxConnections,
    driver.connections,
  );
  const slots = new Slots(connections);
  const limits = (operation: string) => ({
    quiet,
    maxBatch,
    slots,
    timeout,
    expired: (sent: boolean) =>
      new OperationTimeoutError(operation, timeout, sent),
    failed: (error: unknown, sent: boolean) =>
      databaseError(driver, operation, error, sent),
  });
  return {
    put: coalescer(insertRows(driver, tables), limits("put")),
    take: coalescer(deleteRows(driver, tables), limits("take")),
    spent: coalescer(findTombstones(driver, tables), limits("spent")),
    revokeGrant: coalescer(deleteGrants(driver, tables), limits("revokeGrant")),
  };
}

/**
 * A grant identifier as `revokeGrant` takes it, by the rule `put` applies
 * to `data.grantId` (`grantIdentifier` in `_fields.ts`).
 *
 * @throws {TypeError} If it is not a string.
 * @throws {InvalidRecordError} If it breaks the rule (`field` is
 * `"grantId"`).
 */
export function checkGrantId(grantId: unknown): string {
  if (typeof grantId !== "string") {
    throw new TypeError("the grant id must be a string");
  }
  return grantIdentifier(grantId, "grantId");
}

/**
 * Whether `value` is meant as a pool (and not a repository function): a
 * function with a pool's `unsafe` or `options`. Which major it is, and that
 * it is one, the driver seam decides.
 */
function isPool(value: unknown): value is PostgresPool {
  return typeof value === "function" &&
    ("unsafe" in value || "options" in value);
}

function describe(value: unknown): string {
  if (value === undefined || value === null) return `returned ${value}`;
  if (typeof (value as { then?: unknown }).then === "function") {
    return "returned a Promise; it must return the pool itself";
  }
  return `returned a ${typeof value} that is not a postgres.js pool`;
}
