/**
 * `createCodeStore`: single-use authorization codes on PostgreSQL.
 *
 * @module
 */

import type { Sql } from "postgres";
import {
  DuplicateCodeError,
  MissingRepositoryError,
  OperationTimeoutError,
} from "./errors.ts";
import { hashCode, isCodeSyntax } from "./hash_code.ts";
import {
  CODE_COLUMNS,
  type CodeRow,
  rowOf,
  toRecord,
  validateNewCode,
} from "./schema.ts";
import { parseTableName } from "./table_name.ts";
import type { CodeEntry, NewCode } from "./types.ts";

/**
 * Where the store finds its database: a postgres.js `Sql` instance, or a
 * function returning one, called on every operation (so a host can create
 * its pool lazily, as on Deno Deploy). A function that returns no `Sql`
 * makes the operation reject with {@linkcode MissingRepositoryError}.
 */
export type Repository = Sql | (() => Sql | undefined | null);

/** Options for {@linkcode createCodeStore}. */
export interface CodeStoreOptions {
  /**
   * The table, optionally schema-qualified (`"auth.codes"`): lower-case
   * letters, digits and `_`. Defaults to `"authorization_codes"`. Create it
   * with `migrate` (same option).
   */
  readonly table?: string;
  /**
   * How long an operation may wait for the database, in milliseconds,
   * before it is cancelled and rejects with {@linkcode OperationTimeoutError}
   * (default 10 000; `Infinity` waits forever). A safety net: postgres.js
   * queues queries while it cannot connect, retrying with a backoff of up
   * to 20 seconds per attempt, so during an outage a call could otherwise
   * wait for minutes.
   */
  readonly timeout?: number;
}

/** The default of {@linkcode CodeStoreOptions.timeout}. */
export const DEFAULT_TIMEOUT = 10_000;

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
   * @throws {OperationTimeoutError} If the database did not answer in time;
   * the code may or may not be spent, and is never returned to anyone else.
   * @throws {Error} Database errors, as postgres.js raised them; the code may
   * or may not be spent, and is never returned to anyone else.
   */
  take(code: string): Promise<CodeEntry | null>;
}

/**
 * Creates a code store on a PostgreSQL table (see `migrate`).
 *
 * The store works with any postgres.js options: it sends the row as one
 * JSON parameter and reads it back as JSON text, so `prepare: false` (for
 * PgBouncer) and `fetch_types: false` are fine, and column or value
 * `transform`s never touch the stored claims.
 *
 * @param repo A postgres.js `Sql` instance, or a function returning one
 * (called on every operation).
 * @param options The table name and the operation timeout.
 * @returns The store: `put` and `take` closures.
 * @throws {TypeError} If `repo` is missing or not a function,
 * `options.table` is not a valid identifier, or `options.timeout` is not a
 * positive number.
 *
 * @example
 * ```ts ignore
 * import postgres from "postgres";
 * import { createCodeStore, migrate } from "@attesto/code-store";
 *
 * const sql = postgres(Deno.env.get("DATABASE_URL")!);
 * await migrate(sql);
 * const store = createCodeStore(sql);
 *
 * const code = crypto.getRandomValues(new Uint8Array(32))
 *   .toBase64({ alphabet: "base64url", omitPadding: true });
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
  const table = parseTableName(options.table).qualified;
  const { timeout = DEFAULT_TIMEOUT } = options;
  if (
    typeof timeout !== "number" || !(timeout > 0) ||
    (timeout > MAX_TIMER && timeout !== Infinity)
  ) {
    throw new TypeError(
      `options.timeout must be a number of milliseconds from 1 to ${MAX_TIMER}, or Infinity`,
    );
  }

  const database: () => Sql = isSql(repo) ? () => repo : () => {
    const sql = repo();
    if (!isSql(sql)) throw new MissingRepositoryError(describe(sql));
    return sql;
  };

  return {
    async put(input: NewCode): Promise<void> {
      const { code, data, expiresAt } = validateNewCode(input);
      const sql = database();
      const row = rowOf({ codeHash: await hashCode(code), data, expiresAt });
      try {
        await deadline(
          "put",
          sql`
            insert into ${sql(table)} (${sql(CODE_COLUMNS)})
            select ${sql(CODE_COLUMNS)}
            from jsonb_populate_record(null::${sql(table)}, ${sql.json(row)})
          `,
          timeout,
        );
      } catch (error) {
        // 23505 unique_violation: the primary key is the only unique
        // constraint. The server's detail names the key: drop it.
        if ((error as { code?: unknown })?.code === "23505") {
          throw new DuplicateCodeError();
        }
        throw error;
      }
    },

    async take(code: string): Promise<CodeEntry | null> {
      if (typeof code !== "string") {
        throw new TypeError("the authorization code must be a string");
      }
      const sql = database();
      if (!isCodeSyntax(code)) return null;
      const [spent] = await deadline(
        "take",
        sql`
          delete from ${sql(table)} as spent
          where spent.code_hash = ${await hashCode(code)}
          returning
            row_to_json(spent)::text,
            extract(epoch from spent.expires_at)::float8
        `.values(),
        timeout,
      );
      return spent ? toRecord(rowFromJson(spent[0], spent[1])) : null;
    },
  };
}

// setTimeout's largest delay (2^31 - 1 ms, about 24.8 days).
const MAX_TIMER = 2_147_483_647;

/**
 * Settles with `query`, or cancels it and rejects with
 * {@linkcode OperationTimeoutError} once `timeout` ms have passed. A query
 * still queued in postgres.js is removed and never runs; one already sent
 * gets a cancel request.
 */
function deadline<T>(
  operation: string,
  query: Promise<T> & { cancel?: () => unknown },
  timeout: number,
): Promise<T> {
  if (timeout === Infinity) return query;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      // cancel() of a sent query opens a connection to send the request;
      // during an outage that fails, which is fine.
      Promise.resolve(query.cancel?.()).catch(() => {});
      reject(new OperationTimeoutError(operation, timeout));
    }, timeout);
  });
  return Promise.race([query, expired]).finally(() => clearTimeout(timer));
}

/**
 * The row, from `row_to_json` text (parsed here, so no `transform` of the
 * caller's postgres.js instance rewrites claim names) and the expiry in
 * epoch seconds (time zone independent).
 */
function rowFromJson(json: string, expiresAt: number): CodeRow {
  const columns = JSON.parse(json);
  const row = Object.fromEntries(
    CODE_COLUMNS.map((column) => [column, columns[column]]),
  );
  return { ...row, expires_at: new Date(expiresAt * 1000) } as CodeRow;
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
