/**
 * `createCodeStore`: single-use authorization codes on PostgreSQL.
 *
 * @module
 */

import type { Sql } from "postgres";
import { afterBrokenConnection, checkDriver } from "./_driver.ts";
import { promised } from "./_promised.ts";
import { coalescer, type Quiet } from "./coalesce.ts";
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
  type StoreSettings,
  storeSettings,
} from "./options.ts";
import type { CodeEntry, NewCode, SpentCode } from "./types.ts";

/**
 * Where the store finds its database: a postgres.js `Sql` instance, or a
 * function returning one, called on every operation (so a host can create
 * its pool lazily, as on Deno Deploy). A function that returns no `Sql`
 * makes the operation reject with {@linkcode MissingRepositoryError}.
 */
export type Repository = Sql | (() => Sql | undefined | null);

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
   * @throws {Error} Other database errors, as postgres.js raised them.
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
   * @throws {Error} Database errors, as postgres.js raised them; the code may
   * or may not be spent, and is never returned to anyone else.
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
   * @throws {Error} Database errors, as postgres.js raised them.
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
   * @throws {Error} Database errors, as postgres.js raised them.
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
 * @param repo A postgres.js `Sql` instance, or a function returning one
 * (called on every operation).
 * @param options The table, the timeout, coalescing and tombstone retention.
 * @returns The store: `put`, `take`, `spent` and `revokeGrant` closures.
 * @throws {TypeError} If `repo` is missing or not a function,
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
      "createCodeStore needs a postgres.js Sql instance or a function " +
        "returning one; a store without a database fails closed",
    );
  }
  if (typeof repo !== "function") {
    throw new TypeError(
      "createCodeStore: repo must be a postgres.js Sql instance or a " +
        "function returning one",
    );
  }
  const settings = storeSettings(options);
  const tables: Tables = {
    codes: settings.table.qualified,
    spent: settings.table.spent,
    retention: settings.retentionSeconds,
  };
  const { timeoutMs, coalesce } = settings;

  const database: () => Sql = isSql(repo) ? () => repo : () => {
    const sql = repo();
    if (!isSql(sql)) throw new MissingRepositoryError(describe(sql));
    return sql;
  };
  // One set of statements per pool (a repository function may return
  // several), each with its own queues and deadlines. A pool's driver is
  // checked when its statements are made, on its first use.
  const perPool = new WeakMap<Sql, Statements>();
  const statements = (sql: Sql): Statements => {
    let found = perPool.get(sql);
    if (!found) {
      checkDriver(sql);
      found = statementsFor(sql, tables, timeoutMs, coalesce);
      perPool.set(sql, found);
    }
    return found;
  };
  // A pool given directly is checked now: a wrong driver fails at creation.
  if (isSql(repo)) statements(repo);

  return {
    put: (input: NewCode): Promise<void> =>
      promised(() => {
        const { code, data, expiresAt } = validateNewCode(input);
        const sql = database();
        const row = rowOf({ codeHash: hashCode(code), data, expiresAt });
        return statements(sql).put(row);
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
        const sql = database();
        return hash ? statements(sql).spent(hash) : null;
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
 * deadline. Without coalescing, each call is a batch of one, and as many
 * run at once as there are calls.
 */
function statementsFor(
  sql: Sql,
  tables: Tables,
  timeout: number,
  coalesce: StoreSettings["coalesce"],
): Statements {
  const quiet: Quiet = { after: afterBrokenConnection, until: 0 };
  const limits = (operation: string) => ({
    quiet,
    maxBatch: coalesce?.maxBatch ?? 1,
    concurrency: coalesce
      ? coalesce.concurrency ?? sql.options?.max ?? 10
      : Infinity,
    timeout,
    expired: (sent: boolean) =>
      new OperationTimeoutError(operation, timeout, sent),
  });
  return {
    put: coalescer(insertRows(sql, tables), limits("put")),
    take: coalescer(deleteRows(sql, tables), limits("take")),
    spent: coalescer(findTombstones(sql, tables), limits("spent")),
    revokeGrant: coalescer(deleteGrants(sql, tables), limits("revokeGrant")),
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

/** A postgres.js `Sql` instance is a function with these methods. */
function isSql(value: unknown): value is Sql {
  const candidate = value as Partial<Sql> | undefined;
  return typeof value === "function" &&
    typeof candidate?.unsafe === "function" &&
    typeof candidate.begin === "function" &&
    typeof candidate.json === "function";
}

function describe(value: unknown): string {
  if (value === undefined || value === null) return `returned ${value}`;
  if (typeof (value as { then?: unknown }).then === "function") {
    return "returned a Promise; it must return the Sql instance itself";
  }
  return `returned a ${typeof value} that is not a postgres.js Sql instance`;
}
