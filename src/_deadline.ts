/**
 * A deadline for operations bounded as a whole (`migrate`, `purgeExpired`):
 * one `AbortSignal` reaches every statement they send, which the driver
 * stops when it aborts.
 *
 * @module
 */

import { databaseError } from "./_database_error.ts";
import type { Driver } from "./driver/driver.ts";
import { OperationTimeoutError } from "./errors.ts";
import { unrefTimer } from "./_platform.ts";

/**
 * Runs `work` within `ms` (no limit for `Infinity`): `work` gets the signal
 * that aborts once the time is up, and `written`, to call when a statement
 * may have been written to the database. The timer keeps no process alive
 * and is cleared when `work` settles.
 *
 * @param driver The driver `work` sends through, which knows its errors.
 * @param operation The operation, such as `"migrate"`.
 * @param ms Milliseconds, or `Infinity`.
 * @param work The operation's statements.
 * @returns What `work` returns.
 * @throws {OperationTimeoutError} If the time ran out first.
 * @throws {DatabaseError} If a statement failed (see `databaseError`).
 * Either says whether `written` was called (`sent`): if not, the operation
 * had no effect.
 */
export async function withDeadline<T>(
  driver: Driver,
  operation: string,
  ms: number,
  work: (signal: AbortSignal, written: () => void) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  const timer = ms === Infinity
    ? undefined
    : unrefTimer(setTimeout(() => controller.abort(), ms));
  let sent = false;
  try {
    return await work(controller.signal, () => {
      sent = true;
    });
  } catch (error) {
    if (controller.signal.aborted) {
      throw new OperationTimeoutError(operation, ms, sent);
    }
    throw databaseError(driver, operation, error, sent);
  } finally {
    clearTimeout(timer);
  }
}
