/**
 * A Deno Deploy entry point: the reference authorization server
 * (`authorization_server.ts`) on a pool created on first use.
 *
 * ```sh
 * deno run --allow-net --allow-env examples/deploy.ts   # what Deploy grants
 * ```
 *
 * Safe to deploy as it is, and a starting point, not a product: it issues
 * codes only to its one demo client (loopback redirect URIs only) for a
 * demo user it approves itself, and its access tokens live in the memory
 * of each isolate. Replace the client registry, the sign-in and the token
 * store before real use.
 *
 * The database comes from `DATABASE_URL` (add `?sslmode=require` for a
 * managed server) or, when that is unset, from the `PG*` variables (`PGHOST`,
 * `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD`) that Deno Deploy's
 * PostgreSQL integration sets. `ISSUER` sets the issuer URL (default: the
 * origin of each request).
 *
 * @module
 */

import postgres from "postgres";
import { createCodeStore, migrate } from "@attesto/code-store";
import { authorizationServer } from "./authorization_server.ts";

const options = {
  max: 4, // a few connections per isolate; isolates are many and short-lived
  // Seconds: an idle isolate gives its connections back, before a server or
  // proxy drops them itself (a dropped one fails the first take sent on it):
  // keep it under your provider's idle timeout.
  idle_timeout: 10,
  connect_timeout: 5, // seconds: fail fast when the database is unreachable
  fetch_types: false, // nothing to fetch: on 3.4, porsager/postgres #1192
  backoff: false, // while the database is down, fail calls instead of queueing
};
let sql: postgres.Sql | undefined;
function db(): postgres.Sql {
  const url = Deno.env.get("DATABASE_URL");
  return sql ??= url ? postgres(url, options) : postgres(options);
}

// The migration runs once per isolate, and again after a failure (the
// database may have been unreachable), never more than once at a time.
let migrated: Promise<void> | undefined;
function ensureMigrated(): Promise<void> {
  return migrated ??= migrate(db()).catch((error) => {
    migrated = undefined;
    throw error;
  });
}

const handle = authorizationServer({
  // The store asks for the pool on every call, so nothing connects at import.
  store: createCodeStore(db),
  issuer: (request) => Deno.env.get("ISSUER") ?? new URL(request.url).origin,
});

Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000) }, async (request) => {
  try {
    await ensureMigrated();
  } catch (error) {
    console.error(`migrate: ${(error as Error).message}`);
    return new Response("database unavailable", {
      status: 503,
      headers: { "retry-after": "5" },
    });
  }
  return handle(request);
});
