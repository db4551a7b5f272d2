/**
 * A deadline as an `AbortSignal`, for operations bounded as a whole
 * (`migrate`, `purgeExpired`): the signal reaches every statement they
 * send, which the driver stops when it aborts.
 *
 * @module
 */

import { unrefTimer } from "./_platform.ts";

/** A signal that aborts after a time, and its timer. */
export interface Deadline extends Disposable {
  /** Aborts once the time is up. */
  readonly signal: AbortSignal;
}

/**
 * A signal that aborts after `ms` (never for `Infinity`). Its timer keeps
 * no process alive; disposing it clears the timer.
 *
 * @param ms Milliseconds, or `Infinity`.
 */
export function deadline(ms: number): Deadline {
  const controller = new AbortController();
  const timer = ms === Infinity
    ? undefined
    : unrefTimer(setTimeout(() => controller.abort(), ms));
  return {
    signal: controller.signal,
    [Symbol.dispose]: () => clearTimeout(timer),
  };
}
