/**
 * Calls that fail by rejecting, never by throwing.
 *
 * @module
 */

/**
 * Runs `fn` and returns its outcome as a promise: a throw becomes a
 * rejection, as from an `async` function, but a promise `fn` returns is
 * passed on as it is, without the extra promise an `async` function wraps
 * it in.
 *
 * @param fn The work; it may throw.
 * @returns Its result, or a rejection with what it threw.
 */
export function promised<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (error) {
    return Promise.reject(error);
  }
}
