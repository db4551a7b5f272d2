/**
 * The driver seam: the one interface through which the store, migrate,
 * purge and the CLI talk to postgres.js, and the recognition of the pool
 * they are handed. One implementation per supported major
 * (`postgres3.ts`, `postgres4.ts`); nothing outside this folder asks which
 * major it has.
 *
 * @module
 */

import type { PostgresPool } from "../pool.ts";
import { postgres3 } from "./postgres3.ts";
import { postgres4 } from "./postgres4.ts";

/** A result: its rows, each column as text or `null`. */
export type Rows = readonly (readonly (string | null)[])[];

/** One statement, as the store sends it. */
export interface Statement {
  /** Its text. It holds no value: values go in `payload`, as `$1`. */
  readonly text: string;
  /**
   * Its one parameter, `$1`, a `jsonb`: called when the statement is
   * written to a connection (not before, so a caller that gave up by then
   * is left out of it), and serialised as JSON.
   */
  readonly payload?: (() => unknown) | undefined;
}

/** What an error a statement failed with was. */
export type Failure =
  | {
    /** The server answered with an error. */
    readonly kind: "server";
    /** Its SQLSTATE, such as `"25006"`. */
    readonly sqlState: string;
  }
  | {
    /**
     * No answer: the database could not be reached, the connection was
     * lost, or the pool was ended.
     */
    readonly kind: "connection";
    /** The driver's or the socket's code, such as `"ECONNREFUSED"`. */
    readonly reason: string;
  }
  | {
    /** The statement was stopped, as asked through its signal. */
    readonly kind: "stopped";
  }
  | {
    /** Anything else (a bug, a driver error of another kind). */
    readonly kind: "other";
    /** The error's code, if it had one of the driver's. */
    readonly reason: string;
  };

/** A pool of a supported major, as the store uses it. */
export interface Driver {
  /** The major, in words, for messages: `"postgres.js 3.4"`. */
  readonly label: string;
  /** The most connections the pool opens (its `max`). */
  readonly connections: number;
  /**
   * Sends `statement` as the only statement on its connection: nothing is
   * written behind it while it runs, so stopping it touches nothing else.
   *
   * When `signal` aborts, the promise rejects at once with an error whose
   * {@linkcode Driver.failure} is `"stopped"`, and the statement is
   * stopped in its own time: one not yet written is never written (or,
   * where the driver cannot take it back, written with the payload it has
   * then); one the server runs is cancelled on the server, and its
   * connection is given no other statement before the cancel has reached
   * the server (a late cancel would stop that statement instead).
   *
   * @returns Its rows.
   */
  send(statement: Statement, signal?: AbortSignal): Promise<Rows>;
  /**
   * Runs `texts` (no parameters) one after the other in one transaction.
   * When `signal` aborts, the promise rejects; a transaction under way ends
   * by its own `statement_timeout`.
   */
  transaction(texts: readonly string[], signal?: AbortSignal): Promise<void>;
  /**
   * After a statement failed with `error`, how long to send nothing, in
   * milliseconds (0 for no pause).
   */
  pauseAfter(error: unknown): number;
  /** What `error`, from a statement of this driver, was. */
  failure(error: unknown): Failure;
}

/** The majors the store supports, for messages. */
export const SUPPORTED =
  "postgres.js 3.4 (3.4.10 tested) or 4.x (4.2.0 tested)";

const drivers = new WeakMap<object, Driver>();

/**
 * The driver of `pool`, recognised from what each supported major exposes.
 *
 * @param pool What the caller was handed.
 * @param caller The public function it was handed to, for the error.
 * @throws {TypeError} If it is not a pool of a supported major (another
 * major, a look-alike object, a function that is not a pool), naming the
 * supported versions.
 */
export function driverOf(pool: PostgresPool, caller: string): Driver {
  if (typeof pool !== "function") {
    throw new TypeError(
      `${caller}: expected a postgres.js pool (\`postgres(...)\`), got ${
        pool === null ? "null" : typeof pool
      }; supported: ${SUPPORTED}`,
    );
  }
  let driver = drivers.get(pool);
  if (!driver) {
    const made = postgres4(pool) ?? postgres3(pool);
    if (!made) {
      throw new TypeError(
        `${caller}: this is not a postgres.js pool of a supported version ` +
          `(${SUPPORTED}): it lacks what each exposes`,
      );
    }
    drivers.set(pool, driver = made);
  }
  return driver;
}
