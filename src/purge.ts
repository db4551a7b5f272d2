/**
 * The expiry sweeper: `purgeExpired` deletes expired codes and expired
 * tombstones in bounded batches.
 *
 * @module
 */

import { withDeadline } from "./_deadline.ts";
import { type Driver, driverOf } from "./driver/driver.ts";
import type { PostgresPool } from "./pool.ts";
import { purgeRows } from "./statements.ts";
import { integer, knownOptions, timeoutMs } from "./options.ts";
import { parseTableName } from "./table_name.ts";

/** Options for {@linkcode purgeExpired}. */
export interface PurgeOptions {
  /** The codes table, as given to `createCodeStore` (default `"authorization_codes"`). */
  readonly table?: string | undefined;
  /** Rows deleted per statement (default 1000; 1 to 100 000). */
  readonly batchSize?: number | undefined;
  /**
   * How long the whole purge may take, in milliseconds (default 60 000;
   * `Infinity` for no bound). Past it, the running statement is cancelled
   * and the call rejects with `OperationTimeoutError`; the batches already
   * committed stay deleted, and the next run goes on.
   */
  readonly timeoutMs?: number | undefined;
}

/** How many rows {@linkcode purgeExpired} deleted. */
export interface PurgeResult {
  /** Expired codes. */
  readonly codes: number;
  /** Expired tombstones. */
  readonly tombstones: number;
}

/** The default of {@linkcode PurgeOptions.batchSize}. */
export const DEFAULT_PURGE_BATCH_SIZE = 1000;

/** The default of {@linkcode PurgeOptions.timeoutMs}: a minute. */
export const DEFAULT_PURGE_TIMEOUT_MS = 60_000;

/** The largest {@linkcode PurgeOptions.batchSize}. */
export const MAX_PURGE_BATCH_SIZE = 100_000;

/**
 * Validates a batch size: an integer from 1 to
 * {@linkcode MAX_PURGE_BATCH_SIZE}.
 *
 * @throws {TypeError} If it is not a number.
 * @throws {RangeError} If it is out of range.
 */
export function batchSize(value: unknown): number {
  return value === undefined
    ? DEFAULT_PURGE_BATCH_SIZE
    : integer(value, "options.batchSize", 1, MAX_PURGE_BATCH_SIZE);
}

/**
 * Deletes expired codes and expired tombstones, `batchSize` rows per
 * statement, each statement its own short transaction. It never blocks a
 * `take`: a batch locks only expired rows, skips rows another transaction
 * holds (`FOR UPDATE SKIP LOCKED`), and commits before the next begins.
 * Run it every few minutes (see the README: `Deno.cron` or an interval).
 *
 * @param pool A postgres.js pool (3.4 or 4.x).
 * @param options The table, the batch size and the time bound.
 * @returns The numbers of codes and tombstones deleted.
 * @throws {TypeError} If `pool` is not a pool of a supported postgres.js
 * version, `options.table` is not a valid identifier, an option is
 * unknown, or a value is of the wrong type.
 * @throws {RangeError} If `batchSize` or `timeoutMs` is out of range.
 * @throws {OperationTimeoutError} If the purge took longer than
 * `timeoutMs`; batches already committed stay deleted.
 * @throws {DatabaseError} If the database failed a batch or gave no
 * answer; batches already committed stay deleted.
 *
 * @example
 * ```ts ignore
 * import process from "node:process";
 * import postgres from "postgres";
 * import { purgeExpired } from "@attesto/code-store";
 *
 * const sql = postgres(process.env.DATABASE_URL!);
 * const { codes, tombstones } = await purgeExpired(sql);
 * console.log(`purged ${codes} codes and ${tombstones} tombstones`);
 * ```
 */
export async function purgeExpired(
  pool: PostgresPool,
  options: PurgeOptions = {},
): Promise<PurgeResult> {
  const driver = driverOf(pool, "purgeExpired");
  const o = knownOptions(options, ["table", "batchSize", "timeoutMs"]);
  const table = parseTableName(o.table);
  const size = batchSize(o.batchSize);
  const limit = timeoutMs(o.timeoutMs, DEFAULT_PURGE_TIMEOUT_MS);
  return await withDeadline(
    driver,
    "purgeExpired",
    limit,
    async (signal, written) => {
      const run = (name: string) => purge(driver, name, size, signal, written);
      return {
        codes: await run(table.qualified),
        tombstones: await run(table.spent),
      };
    },
  );
}

/**
 * Deletes the expired rows of `table`, a batch per statement, each its own
 * transaction, until a batch finds fewer than `size`. Past the deadline,
 * the running batch is cancelled, and one not yet written deletes nothing.
 */
async function purge(
  driver: Driver,
  table: string,
  size: number,
  signal: AbortSignal,
  written: () => void,
): Promise<number> {
  let total = 0;
  for (;;) {
    const deleted = await purgeRows(driver, table, size, signal, written);
    total += deleted;
    if (deleted < size) return total;
  }
}
