/**
 * The pool the store runs on, as a type.
 *
 * @module
 */

/**
 * A postgres.js pool, as `postgres(url, options)` returns it: postgres.js
 * 3.4 or 4.x. This type is what the store needs of it structurally, so that
 * a pool of either major type-checks; which major it is, and that it is a
 * pool at all, is recognised when it is handed to `createCodeStore`,
 * `migrate` or `purgeExpired`, which refuse anything else.
 *
 * @example
 * ```ts ignore
 * import process from "node:process";
 * import postgres from "postgres"; // 3.4 or 4.x
 * import { createCodeStore, type PostgresPool } from "@attesto/code-store";
 *
 * const sql: PostgresPool = postgres(process.env.DATABASE_URL!);
 * const store = createCodeStore(sql);
 * ```
 */
export interface PostgresPool {
  /** A pool is a function: the tagged template that makes a query. */
  (...args: never[]): unknown;
  /** `sql.unsafe(text, parameters, options)`. */
  unsafe(...args: never[]): unknown;
  /** `sql.end({ timeout })`: ends the pool. */
  end(options?: { timeout?: number | undefined }): Promise<unknown>;
  /** The pool's parsed options. */
  readonly options: object;
}
