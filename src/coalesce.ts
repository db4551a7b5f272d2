/**
 * Coalescing: concurrent calls share one statement, and every call keeps its
 * own deadline.
 *
 * Calls made in the same tick are gathered (a microtask, not a timer: a lone
 * call is sent at once). At most `concurrency` statements are in flight;
 * calls that arrive while they run wait and go out together in the next
 * one, so batches grow with the load and shrink back to one call when it is
 * light. A batch holds at most `maxBatch` calls; calls waiting together are
 * spread over the free slots in parts of at least 32, so that the server
 * works on one statement while the client reads another's results.
 *
 * Deadlines: a call that is not answered within `timeout` is rejected on its
 * own, wherever it is: waiting for a slot, in a statement not yet written to
 * a connection, or in one the server is running. It never fails the other
 * calls of its statement. A statement reads its inputs when postgres.js
 * writes it ({@linkcode Batch.send}), so a call that timed out before then
 * is left out of it: a statement sent late (after a reconnect, a failover)
 * does nothing for it. A statement is cancelled only once every call in it
 * has timed out, and its slot is given back then, whether or not it ever
 * settles. Since every call of a coalescer has the same timeout,
 * deadlines come in arrival order, and one timer serves them all.
 *
 * @module
 */

/** What one call in a batch gets: its value, or its own error. */
export type Outcome<O> = { readonly value: O } | { readonly error: unknown };

/** A batch of calls, as its runner sees it. */
export interface Batch<I> {
  /** The inputs of the calls, in arrival order. */
  readonly inputs: readonly I[];
  /**
   * Called when the statement is written to the database: marks the calls
   * still waiting as sent, and returns their indexes in `inputs`. The calls
   * that timed out before are left out. Later calls return the same indexes.
   */
  send(): readonly number[];
  /** Whether call `i` still waits for its outcome (it has not timed out). */
  waiting(i: number): boolean;
  /**
   * Registers what to do when every call has timed out: cancel the
   * statement if the server works on it. Called at most once. The server
   * can hold a statement whose inputs were not yet written: with prepared
   * statements postgres.js sends Parse first and the parameters only after
   * the server described it, and the Parse of a statement on a table
   * another transaction holds locked waits for that lock. A statement
   * whose inputs are written after its calls timed out does nothing.
   */
  onAbandoned(cancel: () => void): void;
}

/**
 * Runs one statement for a batch and returns one outcome per input, in
 * order (outcomes of calls that timed out are dropped). Throwing or
 * rejecting fails every call still waiting with that error.
 */
export type BatchRunner<I, O> = (
  batch: Batch<I>,
) => Promise<readonly Outcome<O>[]>;

/** Limits of a coalescer. */
export interface CoalesceLimits {
  /** Calls per statement. */
  readonly maxBatch: number;
  /** Statements in flight at once. */
  readonly concurrency: number;
  /** Milliseconds a call may wait in all (queue and statement). */
  readonly timeout: number;
  /**
   * Makes the error of a call whose time ran out; `sent` tells whether its
   * statement had been written to the database.
   */
  readonly expired: (sent: boolean) => unknown;
  /**
   * Shared by the coalescers of one pool: after a statement fails with an
   * error for which `after` returns a number of milliseconds, none of them
   * sends a statement for that long.
   */
  readonly quiet?: Quiet | undefined;
}

/** A pause in sending, shared by the coalescers of one pool. */
export interface Quiet {
  /** How long to stay quiet after a statement failed with `error`, in ms. */
  readonly after: (error: unknown) => number;
  /** Until when (`performance.now()`), set by the coalescers. */
  until: number;
}

/** The smallest part a group of waiting calls is split into. */
const SPLIT_AT = 32;

const QUEUED = 0;
const BATCHED = 1;
const SENT = 2;
const SETTLED = 3;

interface Call<I, O> {
  readonly input: I;
  readonly deadline: number;
  readonly resolve: (value: O) => void;
  readonly reject: (error: unknown) => void;
  state: typeof QUEUED | typeof BATCHED | typeof SENT | typeof SETTLED;
  batch: InFlight | undefined;
}

/** The bookkeeping of a statement in flight. */
interface InFlight {
  /** Calls that still wait. */
  waiting: number;
  /** Whether the statement was written to the database. */
  sent: boolean;
  cancel: (() => void) | undefined;
  /** Gives its slot back, once. */
  release: () => void;
}

/**
 * Returns a function that submits one call and settles with its outcome,
 * running calls in batches through `run`.
 *
 * @param run Runs one statement for a batch.
 * @param limits Batch size, concurrency and the deadline of every call.
 * @returns The function to call.
 */
export function coalescer<I, O>(
  run: BatchRunner<I, O>,
  limits: CoalesceLimits,
): (input: I) => Promise<O> {
  const { maxBatch, concurrency, timeout, expired, quiet } = limits;
  let pending: Call<I, O>[] = [];
  let inFlight = 0;
  let scheduled = false;
  // Every unsettled call in arrival order (so in deadline order), from
  // `head`; settled calls are dropped from the front as they settle.
  let calls: Call<I, O>[] = [];
  let head = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  /** Marks `call` settled; `timedOut` when its time ran out. */
  const settle = (call: Call<I, O>, timedOut = false) => {
    call.state = SETTLED;
    const batch = call.batch;
    call.batch = undefined;
    if (batch && --batch.waiting === 0 && timedOut) {
      // Nobody waits for the statement any more: cancel it if the server
      // works on it (running, or still parsing: see `onAbandoned`), and
      // free its slot now. A statement can fail to settle at all
      // (postgres.js 3.4.9 loses a query handed to a connection between
      // its socket error and its close), and must not hold a slot forever.
      batch.cancel?.();
      batch.release();
    }
    while (head < calls.length && calls[head]!.state === SETTLED) head++;
    if (head === calls.length) {
      // Nothing left to time out: no timer keeps the process alive.
      calls = [];
      head = 0;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    } else if (head > 1024 && head * 2 > calls.length) {
      calls = calls.slice(head);
      head = 0;
    }
  };

  const expire = () => {
    timer = undefined;
    const now = performance.now();
    while (head < calls.length && calls[head]!.deadline <= now) {
      const call = calls[head]!;
      const sent = call.state === SENT;
      settle(call, true);
      call.reject(expired(sent));
    }
    arm();
  };

  const arm = () => {
    if (timer === undefined && head < calls.length && timeout !== Infinity) {
      const wait = calls[head]!.deadline - performance.now();
      timer = setTimeout(expire, Math.max(0, Math.ceil(wait)));
    }
  };

  let resume: ReturnType<typeof setTimeout> | undefined;

  /** Flushes in a microtask, once for all the calls of this tick. */
  const schedule = () => {
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(flush);
    }
  };

  const flush = () => {
    scheduled = false;
    const wait = (quiet?.until ?? 0) - performance.now();
    if (wait > 0 && pending.length > 0) {
      resume ??= setTimeout(() => {
        resume = undefined;
        flush();
      }, Math.ceil(wait));
      return;
    }
    // Calls waiting together are spread over the free slots, so that one
    // statement runs on the server while the results of another are read,
    // but never into parts smaller than SPLIT_AT: each statement is a
    // commit, and on a durable server a commit costs more than a row.
    const parts = Math.max(
      1,
      Math.min(concurrency - inFlight, Math.floor(pending.length / SPLIT_AT)),
    );
    const size = Math.min(maxBatch, Math.ceil(pending.length / parts));
    while (pending.length > 0 && inFlight < concurrency) {
      const batch: Call<I, O>[] = [];
      let taken = 0;
      while (taken < pending.length && batch.length < size) {
        const call = pending[taken++]!;
        if (call.state === QUEUED) batch.push(call);
      }
      pending = taken === pending.length ? [] : pending.slice(taken);
      if (batch.length > 0) send(batch);
    }
  };

  const send = (batch: Call<I, O>[]) => {
    inFlight++;
    let released = false;
    const flight: InFlight = {
      waiting: batch.length,
      sent: false,
      cancel: undefined,
      release() {
        if (released) return;
        released = true;
        inFlight--;
        schedule();
      },
    };
    for (const call of batch) {
      call.state = BATCHED;
      call.batch = flight;
    }
    let sent: number[] | undefined;
    const view: Batch<I> = {
      inputs: batch.map((call) => call.input),
      send() {
        if (!sent) {
          flight.sent = true;
          sent = [];
          for (const [i, call] of batch.entries()) {
            if (call.state === BATCHED) {
              call.state = SENT;
              sent.push(i);
            }
          }
        }
        return sent;
      },
      waiting: (i) => batch[i]!.state !== SETTLED,
      onAbandoned(cancel) {
        if (flight.waiting > 0) flight.cancel = cancel;
      },
    };
    const fail = (error: unknown) => {
      const pause = quiet?.after(error) ?? 0;
      if (pause > 0) {
        quiet!.until = Math.max(quiet!.until, performance.now() + pause);
      }
      for (const call of batch) {
        if (call.state !== SETTLED) {
          settle(call);
          call.reject(error);
        }
      }
    };
    let statement: Promise<readonly Outcome<O>[]>;
    try {
      statement = run(view);
    } catch (error) {
      statement = Promise.reject(error);
    }
    statement.then((outcomes) => {
      for (const [i, call] of batch.entries()) {
        if (call.state === SETTLED) continue;
        const outcome = outcomes[i];
        settle(call);
        if (outcome === undefined) {
          call.reject(
            new Error(
              `internal error: the statement returned ${outcomes.length} ` +
                `outcomes for ${batch.length} calls`,
            ),
          );
        } else if ("value" in outcome) {
          call.resolve(outcome.value);
        } else {
          call.reject(outcome.error);
        }
      }
    }, fail).catch(fail).finally(flight.release);
  };

  return (input) =>
    new Promise<O>((resolve, reject) => {
      const call: Call<I, O> = {
        input,
        deadline: performance.now() + timeout,
        resolve,
        reject,
        state: QUEUED,
        batch: undefined,
      };
      pending.push(call);
      calls.push(call);
      arm();
      schedule();
    });
}
