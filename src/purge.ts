/**
 * The expiry sweeper: `purgeExpired` deletes expired codes and expired
 * tombstones in bounded batches.
 *
 * @module
 */

import type { Sql } from "postgres";
import { parseTableName } from "./table_name.ts";

/** Options for {@linkcode purgeExpired}. */
export interface PurgeOptions {
  /** The codes table, as given to `createCodeStore` (default `"authorization_codes"`). */
  readonly table?: string | undefined;
  /** Rows deleted per statement (default 1000; 1 to 100 000). */
  readonly batchSize?: number | undefined;
}

/** How many rows {@linkcode purgeExpired} deleted. */
export interface PurgeResult {
  /** Expired codes. */
  readonly codes: number;
  /** Expired tombstones. */
  readonly tombstones: number;
}

/** The default of {@linkcode PurgeOptions.batchSize}. */
export const DEFAULT_PURGE_BATCH = 1000;

/**
 * Deletes expired codes and expired tombstones, `batchSize` rows per
 * statement, each statement its own short transaction. It never blocks a
 * `take`: a batch locks only expired rows, skips rows another transaction
 * holds (`FOR UPDATE SKIP LOCKED`), and commits before the next begins.
 * Run it every few minutes (see the README: `Deno.cron` or an interval).
 *
 * @param sql A postgres.js instance.
 * @param options The table and the batch size.
 * @returns The numbers of codes and tombstones deleted.
 * @throws {TypeError} If `options.table` is not a valid identifier or
 * `options.batchSize` is out of range.
 * @throws {Error} Database errors, as postgres.js raised them; batches
 * already committed stay deleted.
 *
 * @example
 * ```ts ignore
 * import postgres from "postgres";
 * import { purgeExpired } from "@attesto/code-store";
 *
 * const sql = postgres(Deno.env.get("DATABASE_URL")!);
 * const { codes, tombstones } = await purgeExpired(sql);
 * console.log(`purged ${codes} codes and ${tombstones} tombstones`);
 * ```
 */
export async function purgeExpired(
  sql: Sql,
  options: PurgeOptions = {},
): Promise<PurgeResult> {
  const table = parseTableName(options.table);
  const { batchSize = DEFAULT_PURGE_BATCH } = options;
  if (
    typeof batchSize !== "number" || !Number.isInteger(batchSize) ||
    batchSize < 1 || batchSize > 100_000
  ) {
    throw new TypeError(
      "options.batchSize must be an integer from 1 to 100000",
    );
  }
  return {
    codes: await purge(sql, table.qualified, batchSize),
    tombstones: await purge(sql, table.spent, batchSize),
  };
}

async function purge(sql: Sql, table: string, batchSize: number) {
  let total = 0;
  for (;;) {
    const [row] = await sql`
      with doomed as (
        select code_hash from ${sql(table)}
        where expires_at < now()
        order by expires_at
        limit ${batchSize}
        for update skip locked
      ), gone as (
        delete from ${sql(table)}
        where code_hash in (select code_hash from doomed)
        returning 1
      )
      select count(*)::int from gone
    `.values();
    const deleted = Number(row?.[0]);
    total += deleted;
    if (deleted < batchSize) return total;
  }
}
