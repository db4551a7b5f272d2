/**
 * The database of a runnable example (`deno task example`, the oidc-provider
 * example): `DATABASE_URL`, or an embedded server when it is unset, on a
 * pool with the settings the README recommends. A development tool: an
 * example imports it only when run as a program, never when a host imports
 * its handler.
 *
 * @module
 */

import postgres, { type Sql } from "./postgres.ts";
import { databaseFromEnv } from "./embedded_postgres.ts";

/** A pool on the example's database, and how to stop both. */
export interface ExampleDatabase {
  /** The pool. */
  readonly sql: Sql;
  /** Ends the pool, then removes the embedded server if there is one. */
  close(): Promise<void>;
  /**
   * Calls `stop` on SIGINT and SIGTERM. With an embedded server, whose own
   * handlers remove it and exit on a signal, registers nothing.
   */
  stopOnSignal(stop: () => Promise<void>): void;
}

/**
 * Opens the example's database.
 *
 * @returns The pool, and how to stop it.
 */
export async function exampleDatabase(): Promise<ExampleDatabase> {
  const { url, server } = await databaseFromEnv();
  const sql = postgres(url, {
    fetch_types: false, // porsager/postgres #1192, #1205, #1223
    backoff: false,
    connect_timeout: 5,
    onnotice: () => {},
  });
  return {
    sql,
    close: async () => {
      await sql.end({ timeout: 5 });
      await server?.destroy();
    },
    stopOnSignal: (stop) => {
      if (server) return;
      Deno.addSignalListener("SIGINT", stop);
      Deno.addSignalListener("SIGTERM", stop);
    },
  };
}

/**
 * A `--port` value, or exits with status 2 and a message.
 *
 * @param value The flag as given.
 * @returns A port number, 0 for any free port.
 */
export function portFlag(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535) {
    console.error("--port must be a port number");
    Deno.exit(2);
  }
  return port;
}
