/**
 * Coalescing: concurrent calls share one statement.
 *
 * Calls made in the same tick are gathered (a microtask, not a timer: a
 * lone call is sent at once). At most `concurrency` statements are in
 * flight; calls that arrive while they run wait and go out together in the
 * next one, so batches grow with the load and shrink back to one call when
 * it is light. A batch holds at most `maxBatch` calls.
 *
 * @module
 */

/** What one call in a batch gets: its value, or its own error. */
export type Outcome<O> = { readonly value: O } | { readonly error: unknown };

/**
 * Runs one statement for a batch and returns one outcome per input, in
 * order. Throwing (or rejecting) fails every call in the batch with that
 * error.
 *
 * @param inputs The calls' inputs.
 * @param timeout Milliseconds left before the oldest call's deadline.
 */
export type BatchRunner<I, O> = (
  inputs: readonly I[],
  timeout: number,
) => Promise<readonly Outcome<O>[]>;

interface Call<I, O> {
  readonly input: I;
  readonly since: number;
  readonly resolve: (value: O) => void;
  readonly reject: (error: unknown) => void;
}

/** Limits of a coalescer. */
export interface CoalesceLimits {
  /** Calls per statement. */
  readonly maxBatch: number;
  /** Statements in flight at once. */
  readonly concurrency: number;
  /** Milliseconds a call may wait in all (queue and statement). */
  readonly timeout: number;
  /** Makes the error for a call whose time ran out in the queue. */
  readonly expired: () => unknown;
}

/**
 * Returns a function that submits one call and settles with its outcome,
 * running calls in batches through `run`.
 */
export function coalescer<I, O>(
  run: BatchRunner<I, O>,
  limits: CoalesceLimits,
): (input: I) => Promise<O> {
  let pending: Call<I, O>[] = [];
  let inFlight = 0;
  let scheduled = false;

  const flush = () => {
    scheduled = false;
    while (pending.length > 0 && inFlight < limits.concurrency) {
      const batch = pending.length <= limits.maxBatch
        ? pending
        : pending.slice(0, limits.maxBatch);
      pending = batch === pending ? [] : pending.slice(limits.maxBatch);
      send(batch);
    }
  };

  const send = (batch: Call<I, O>[]) => {
    const left = limits.timeout - (performance.now() - batch[0]!.since);
    if (left <= 0) {
      for (const call of batch) call.reject(limits.expired());
      return;
    }
    inFlight++;
    run(batch.map((call) => call.input), left).then(
      (outcomes) =>
        batch.forEach((call, i) => {
          const outcome = outcomes[i]!;
          "value" in outcome
            ? call.resolve(outcome.value)
            : call.reject(outcome.error);
        }),
      (error) => batch.forEach((call) => call.reject(error)),
    ).finally(() => {
      inFlight--;
      flush();
    });
  };

  return (input) =>
    new Promise<O>((resolve, reject) => {
      pending.push({ input, since: performance.now(), resolve, reject });
      if (!scheduled) {
        scheduled = true;
        queueMicrotask(flush);
      }
    });
}
