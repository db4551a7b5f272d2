/**
 * Coalescing: concurrent calls share one statement, and every call keeps its
 * own deadline.
 *
 * Calls made in the same tick are gathered (a microtask, not a timer: a lone
 * call is sent at once). At most as many statements as there are free
 * {@linkcode Slots} are in flight;
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

import { refTimer, unrefTimer } from "./_platform.ts";

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
   * Aborts once every call has timed out: the statement is to be stopped
   * (see the driver's `send`). Its outcome then goes to no one.
   */
  readonly signal: AbortSignal;
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
  /**
   * The slots of statements in flight, which coalescers may share (a store's
   * operations on one pool share its connections).
   */
  readonly slots: Slots;
  /** Milliseconds a call may wait in all (queue and statement). */
  readonly timeout: number;
  /**
   * Makes the error of a call whose time ran out; `sent` tells whether its
   * statement had been written to the database.
   */
  readonly expired: (sent: boolean) => unknown;
  /**
   * Makes the error of a call whose statement failed with `error` (the
   * driver's); `sent` tells whether the statement had been written to the
   * database. By default the call rejects with `error` itself.
   */
  readonly failed?: ((error: unknown, sent: boolean) => unknown) | undefined;
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

/**
 * Slots for statements in flight, shared by the coalescers that draw on
 * them: each statement holds one from when it is sent until it settles or
 * is abandoned. A coalescer that found none free waits for the next one
 * given back.
 */
export class Slots {
  #free: number;
  readonly #waiting = new Set<() => void>();

  /** @param size How many statements may be in flight at once. */
  constructor(size: number) {
    this.#free = size;
  }

  /** How many are free. */
  get free(): number {
    return this.#free;
  }

  /** Takes one (there must be one free). */
  take(): void {
    this.#free--;
  }

  /** Gives one back, and wakes the coalescers waiting for one. */
  give(): void {
    this.#free++;
    for (const wake of this.#waiting) {
      if (this.#free <= 0) break;
      this.#waiting.delete(wake);
      wake();
    }
  }

  /** Calls `wake` once, when a slot is given back. */
  wait(wake: () => void): void {
    this.#waiting.add(wake);
  }
}

/** The smallest part a group of waiting calls is split into. */
const SPLIT_AT = 32;

/**
 * Where a call is: waiting for a slot, in a statement not yet written to a
 * connection, in one written, or answered (or timed out).
 */
type CallState = "queued" | "batched" | "sent" | "settled";

interface Call<I, O> {
  readonly input: I;
  readonly deadline: number;
  readonly resolve: (value: O) => void;
  readonly reject: (error: unknown) => void;
  state: CallState;
  flight: Flight<I, O> | undefined;
}

/**
 * The unsettled calls of a coalescer in arrival order, which is deadline
 * order (every call has the same timeout), and the one timer that rejects
 * each call whose deadline has passed. Settled calls leave from the front.
 */
class DeadlineQueue<I, O> {
  #calls: Call<I, O>[] = [];
  #head = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Whether the timer keeps the process alive (it does while calls wait). */
  #held = false;
  readonly #timeout: number;
  readonly #expire: (call: Call<I, O>) => void;

  /**
   * @param timeout Milliseconds each call may wait.
   * @param expire Called for each call whose deadline has passed.
   */
  constructor(timeout: number, expire: (call: Call<I, O>) => void) {
    this.#timeout = timeout;
    this.#expire = expire;
  }

  /** Adds a call; its deadline is the latest so far. */
  add(call: Call<I, O>): void {
    this.#calls.push(call);
    if (this.#timer === undefined) this.#arm();
    else if (!this.#held) {
      refTimer(this.#timer);
      this.#held = true;
    }
  }

  /**
   * Drops settled calls from the front. When none is left, the timer stays
   * (a call that comes next needs no new one: setting and clearing a timer
   * per call costs more than the call's own work) but no longer keeps the
   * process alive; it fires once for nothing.
   */
  trim(): void {
    const calls = this.#calls;
    while (
      this.#head < calls.length && calls[this.#head]!.state === "settled"
    ) {
      this.#head++;
    }
    if (this.#head === calls.length) {
      this.#calls = [];
      this.#head = 0;
      if (this.#held) {
        unrefTimer(this.#timer!);
        this.#held = false;
      }
    } else if (this.#head > 1024 && this.#head * 2 > calls.length) {
      this.#calls = calls.slice(this.#head);
      this.#head = 0;
    }
  }

  #fire = () => {
    this.#timer = undefined;
    this.#held = false;
    const now = performance.now();
    // `trim` may replace the array as calls expire: read it each time.
    while (
      this.#head < this.#calls.length &&
      this.#calls[this.#head]!.deadline <= now
    ) {
      this.#expire(this.#calls[this.#head]!);
    }
    this.#arm();
  };

  #arm(): void {
    if (
      this.#timer === undefined && this.#head < this.#calls.length &&
      this.#timeout !== Infinity
    ) {
      const wait = this.#calls[this.#head]!.deadline - performance.now();
      this.#timer = setTimeout(this.#fire, Math.max(0, Math.ceil(wait)));
      this.#held = true;
    }
  }
}

/**
 * A statement in flight: its calls, which of them still wait, whether it
 * was written to a connection, the signal that stops it once every call
 * has timed out (`abandon`), and its slot (`release`, once).
 */
class Flight<I, O> implements Batch<I> {
  readonly inputs: readonly I[];
  readonly calls: readonly Call<I, O>[];
  /** Calls that still wait. */
  waitingCount: number;
  #sent: number[] | undefined;
  #controller: AbortController | undefined;
  #released = false;
  readonly #free: () => void;

  /**
   * @param calls The calls of the statement.
   * @param free Gives the slot back.
   */
  constructor(calls: Call<I, O>[], free: () => void) {
    this.calls = calls;
    this.inputs = calls.map((call) => call.input);
    this.waitingCount = calls.length;
    this.#free = free;
    for (const call of calls) {
      call.state = "batched";
      call.flight = this;
    }
  }

  send(): readonly number[] {
    if (!this.#sent) {
      const sent: number[] = [];
      const calls = this.calls;
      for (let i = 0; i < calls.length; i++) {
        const call = calls[i]!;
        if (call.state === "batched") {
          call.state = "sent";
          sent.push(i);
        }
      }
      this.#sent = sent;
    }
    return this.#sent;
  }

  waiting(i: number): boolean {
    return this.calls[i]!.state !== "settled";
  }

  get signal(): AbortSignal {
    return (this.#controller ??= new AbortController()).signal;
  }

  /**
   * Nobody waits for the statement any more: its signal aborts (the driver
   * stops it), and its slot is given back now. A statement can fail to
   * settle at all (postgres.js 3.4 loses a query handed to a connection
   * between its socket error and its close), and must not hold a slot
   * forever.
   */
  abandon(): void {
    this.#controller?.abort();
    this.release();
  }

  /** Gives the slot back, once. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#free();
  }
}

/**
 * Returns a function that submits one call and settles with its outcome,
 * running calls in batches through `run`.
 *
 * @param run Runs one statement for a batch.
 * @param limits Batch size, slots and the deadline of every call.
 * @returns The function to call.
 */
export function coalescer<I, O>(
  run: BatchRunner<I, O>,
  limits: CoalesceLimits,
): (input: I) => Promise<O> {
  const { maxBatch, slots, timeout, expired, failed, quiet } = limits;
  let pending: Call<I, O>[] = [];
  let scheduled = false;
  // The time of this tick's calls, read once for all of them (the flush of
  // the tick resets it).
  let now = -1;
  let resume: ReturnType<typeof setTimeout> | undefined;

  /** Marks `call` settled; `timedOut` when its time ran out. */
  const settle = (call: Call<I, O>, timedOut = false) => {
    call.state = "settled";
    const flight = call.flight;
    call.flight = undefined;
    if (flight && --flight.waitingCount === 0 && timedOut) flight.abandon();
    deadlines.trim();
  };

  const deadlines = new DeadlineQueue<I, O>(timeout, (call) => {
    const sent = call.state === "sent";
    settle(call, true);
    call.reject(expired(sent));
  });

  /** Flushes in a microtask, once for all the calls of this tick. */
  const schedule = () => {
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(flush);
    }
  };

  const flush = () => {
    scheduled = false;
    now = -1;
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
      Math.min(slots.free, Math.floor(pending.length / SPLIT_AT)),
    );
    const size = Math.min(maxBatch, Math.ceil(pending.length / parts));
    while (pending.length > 0 && slots.free > 0) {
      const batch: Call<I, O>[] = [];
      let taken = 0;
      while (taken < pending.length && batch.length < size) {
        const call = pending[taken++]!;
        if (call.state === "queued") batch.push(call);
      }
      pending = taken === pending.length ? [] : pending.slice(taken);
      if (batch.length > 0) send(batch);
    }
    if (pending.length > 0) slots.wait(schedule);
  };

  const free = () => {
    slots.give();
    schedule();
  };

  /** Answers the calls still waiting with the statement's outcomes. */
  const answer = (flight: Flight<I, O>, outcomes: readonly Outcome<O>[]) => {
    const calls = flight.calls;
    for (let i = 0; i < calls.length; i++) {
      const call = calls[i]!;
      if (call.state === "settled") continue;
      const outcome = outcomes[i];
      settle(call);
      if (outcome === undefined) {
        call.reject(
          new Error(
            `internal error: the statement returned ${outcomes.length} ` +
              `outcomes for ${flight.calls.length} calls`,
          ),
        );
      } else if ("value" in outcome) {
        call.resolve(outcome.value);
      } else {
        call.reject(outcome.error);
      }
    }
  };

  /** Fails the calls still waiting with `error`, pausing if it says so. */
  const fail = (flight: Flight<I, O>, error: unknown) => {
    const pause = quiet?.after(error) ?? 0;
    if (pause > 0) {
      quiet!.until = Math.max(quiet!.until, performance.now() + pause);
    }
    for (const call of flight.calls) {
      if (call.state !== "settled") {
        const sent = call.state === "sent";
        settle(call);
        call.reject(failed ? failed(error, sent) : error);
      }
    }
  };

  const send = (calls: Call<I, O>[]) => {
    slots.take();
    const flight = new Flight(calls, free);
    let statement: Promise<readonly Outcome<O>[]>;
    try {
      statement = run(flight);
    } catch (error) {
      statement = Promise.reject(error);
    }
    // One reaction, not a chain: a statement's calls are answered and its
    // slot given back at once, before the callers' own code resumes.
    statement.then((outcomes) => {
      try {
        answer(flight, outcomes);
      } catch (error) {
        fail(flight, error);
      } finally {
        flight.release();
      }
    }, (error) => {
      try {
        fail(flight, error);
      } finally {
        flight.release();
      }
    });
  };

  return (input) =>
    new Promise<O>((resolve, reject) => {
      if (now < 0) now = performance.now();
      const call: Call<I, O> = {
        input,
        deadline: now + timeout,
        resolve,
        reject,
        state: "queued",
        flight: undefined,
      };
      pending.push(call);
      deadlines.add(call);
      schedule();
    });
}
