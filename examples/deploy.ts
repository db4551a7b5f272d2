// A minimal Deno Deploy entry point using the store.
import postgres from "postgres";
import { createCodeStore, migrate } from "@attesto/code-store";

// One pool per isolate, created on first use. It reads DATABASE_URL (add
// ?sslmode=require for a managed server) or, when that is unset, the PG*
// variables (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD) that Deno
// Deploy's PostgreSQL integration sets.
const options = {
  max: 4, // a few connections per isolate; isolates are many and short-lived
  idle_timeout: 20, // seconds: let an idle isolate give its connections back
  connect_timeout: 5, // seconds: fail fast when the database is unreachable
  fetch_types: false, // see porsager/postgres #1192, #1205, #1223
  backoff: false, // while the database is down, fail calls instead of queueing
};
let sql: postgres.Sql | undefined;
function db(): postgres.Sql {
  const url = Deno.env.get("DATABASE_URL");
  return sql ??= url ? postgres(url, options) : postgres(options);
}

// The store asks for the pool on every call, so nothing connects at import.
const store = createCodeStore(db);
let migrated: Promise<void> | undefined;

Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000) }, async (request) => {
  migrated ??= migrate(db()); // idempotent; or run the CLI's migrate at deploy
  await migrated;
  const url = new URL(request.url);
  // Illustration only: wire put into your authorization endpoint and take
  // into your token endpoint (see examples/authorization_server.ts).
  if (request.method === "POST" && url.pathname === "/codes") {
    const code = crypto.getRandomValues(new Uint8Array(32))
      .toBase64({ alphabet: "base64url", omitPadding: true });
    await store.put({
      code,
      expiresAt: Math.floor(Date.now() / 1000) + 60,
      data: await request.json(),
    });
    return Response.json({ code });
  }
  if (request.method === "POST" && url.pathname === "/token") {
    const form = new URLSearchParams(await request.text());
    const entry = await store.take(form.get("code") ?? "");
    return entry
      ? Response.json({ subject: entry.data.subject })
      : Response.json({ error: "invalid_grant" }, { status: 400 });
  }
  return new Response("not found", { status: 404 });
});
