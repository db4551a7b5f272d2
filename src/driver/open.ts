/**
 * A pool of its own, for the command line: made with the postgres.js this
 * package depends on.
 *
 * @module
 */

import postgres from "postgres";
import type { PostgresPool } from "../pool.ts";

/** The settings of a command-line pool. */
export interface PoolSettings {
  /** Connections. */
  readonly max: number;
  /** Seconds to connect. */
  readonly connect_timeout: number;
}

/**
 * Opens a pool on `url`, or on the `PG*` variables without one; no type
 * fetching, no notices.
 *
 * @throws {Error} If the driver refuses the settings (its message may quote
 * the URL: do not print it).
 */
export function openPool(
  url: string | undefined,
  settings: PoolSettings,
): PostgresPool {
  const options = { ...settings, fetch_types: false, onnotice: () => {} };
  return (url ? postgres(url, options) : postgres(options)) as PostgresPool;
}
