/**
 * An OpenAuth (`@openauthjs/openauth` 0.4) issuer with its authorization
 * codes in the code store (`createOpenAuthStorage`), every other key in a
 * PostgreSQL table shared by its processes. A demo: one provider that
 * signs every request in as one demo user (a real issuer has a password,
 * code or OAuth provider there).
 *
 * ```sh
 * DATABASE_URL=postgres://... deno run -A examples/openauth_issuer.ts --port 8000
 * ```
 *
 * Environment: `DATABASE_URL` (its `search_path` holds `openauth_kv`, see
 * {@linkcode OPENAUTH_KV}); `MODE=control` keeps codes in that table too,
 * with 1 ms of latency per storage call, to show the race the store
 * closes. With `--port 0` it prints `{"port":n}` once it listens.
 *
 * @module
 */

import process from "node:process";
import { issuer } from "@openauthjs/openauth";
import { createSubjects } from "@openauthjs/openauth/subject";
import postgres from "postgres";
import { createCodeStore } from "@attesto/code-store";
import {
  createOpenAuthStorage,
  type OpenAuthStorageAdapter,
} from "@attesto/code-store/openauth";
import { fetchListener, serve } from "./serve.ts";

/** The table of {@linkcode postgresStorage}. */
export const OPENAUTH_KV = `
  create table if not exists openauth_kv (
    key text collate "C" primary key,
    value jsonb not null,
    expiry timestamptz
  )`;

const SEPARATOR = String.fromCharCode(31);
const delay = () => new Promise((resolve) => setTimeout(resolve, 1));

/**
 * An OpenAuth storage adapter on a PostgreSQL table, shared by every
 * process (OpenAuth's own `MemoryStorage` is per process). With `latency`,
 * each call first waits a millisecond, as a remote store would.
 */
export function postgresStorage(
  sql: postgres.Sql,
  { latency = false } = {},
): OpenAuthStorageAdapter {
  const wait = latency ? delay : () => Promise.resolve();
  return {
    async get(key) {
      await wait();
      const [row] = await sql<{ value: Record<string, unknown> }[]>`
        select value from openauth_kv
        where key = ${key.join(SEPARATOR)}
          and (expiry is null or expiry > now())
      `;
      return row?.value;
    },
    async set(key, value, expiry) {
      await wait();
      await sql`
        insert into openauth_kv (key, value, expiry)
        values (${key.join(SEPARATOR)}, ${sql.json(value as never)},
          ${expiry ?? null})
        on conflict (key) do update
        set value = excluded.value, expiry = excluded.expiry
      `;
    },
    async remove(key) {
      await wait();
      await sql`delete from openauth_kv where key = ${key.join(SEPARATOR)}`;
    },
    async *scan(prefix) {
      await wait();
      const rows = await sql<{ key: string; value: unknown }[]>`
        select key, value from openauth_kv
        where starts_with(key, ${prefix.join(SEPARATOR)})
          and (expiry is null or expiry > now())
      `;
      for (const row of rows) yield [row.key.split(SEPARATOR), row.value];
    },
  };
}

/** A Standard Schema that accepts any object (the demo's subject). */
const anyObject = {
  "~standard": {
    version: 1 as const,
    vendor: "attesto-demo",
    validate: (value: unknown) => ({ value: value as { id: string } }),
  },
};

/** The issuer, per the mode: a Hono app (`app.fetch`). */
export function openAuthIssuer(sql: postgres.Sql, mode: "store" | "control") {
  const others = postgresStorage(sql, { latency: mode === "control" });
  return issuer({
    storage: mode === "control"
      ? others
      : createOpenAuthStorage(createCodeStore(sql), { fallback: others }),
    subjects: createSubjects({ user: anyObject }),
    providers: {
      // Demo: every request signs in as the demo user.
      demo: {
        type: "demo",
        init(route, ctx) {
          route.get("/authorize", (c) => ctx.success(c, { id: "user-42" }));
        },
      },
    },
    success: (ctx, value: { id: string }) =>
      ctx.subject("user", { id: value.id }),
  });
}

if (import.meta.main) {
  const sql = postgres(process.env.DATABASE_URL!, {
    fetch_types: false,
    onnotice: () => {},
  });
  const app = openAuthIssuer(
    sql,
    process.env.MODE === "control" ? "control" : "store",
  );
  serve(fetchListener(app.fetch), () => sql.end({ timeout: 1 }));
}
