/**
 * Deno Deploy readiness: the entry point `examples/deploy.ts` runs with the
 * network and environment permissions only (the published module touches no
 * file), retries a migration that failed, and redeems each code once with
 * every check.
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import { databaseUrl, testDatabase } from "./support/database.ts";
import { startTcpProxy } from "./support/tcp_proxy.ts";
import { newVerifier, s256 } from "../examples/pkce.ts";

const ENTRY = new URL("../examples/deploy.ts", import.meta.url).pathname;

Deno.test("the Deploy entry point runs with only net and env permissions, retries a failed migration, and redeems a code once with every check", async () => {
  await using t = await testDatabase();
  const target = new URL(databaseUrl());
  target.searchParams.set("search_path", t.schema);
  // The database is unreachable at first.
  await using proxy = await startTcpProxy(target.href);
  proxy.refuse();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const child = new Deno.Command(Deno.execPath(), {
    // No --allow-read, --allow-write, --allow-sys, --allow-run, --allow-ffi.
    args: ["run", "--allow-net", "--allow-env", ENTRY],
    env: { DATABASE_URL: proxy.url, PORT: String(port) },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const log = (async () => {
    let text = "";
    for await (
      const chunk of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      text += chunk;
    }
    return text;
  })();
  try {
    const base = `http://127.0.0.1:${port}`;
    let first: Response | undefined;
    for (let tries = 0; !first; tries++) {
      try {
        first = await fetch(`${base}/.well-known/oauth-authorization-server`);
      } catch (error) {
        if (tries > 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    await first.body?.cancel();
    assertEquals(first.status, 503, "the migration failed: retry later");
    await proxy.accept();
    const metadata = await fetch(
      `${base}/.well-known/oauth-authorization-server`,
    );
    assertEquals(metadata.status, 200, "the migration was retried");
    assertEquals((await metadata.json()).issuer, base);

    // No endpoint mints a code for arbitrary data.
    const open = await fetch(`${base}/codes`, { method: "POST", body: "{}" });
    await open.body?.cancel();
    assertEquals(open.status, 404);

    const verifier = newVerifier();
    const redirectUri = "http://127.0.0.1:9/callback";
    const authorize = await fetch(
      `${base}/authorize?${new URLSearchParams({
        response_type: "code",
        client_id: "demo-client",
        redirect_uri: redirectUri,
        state: "xyz",
        code_challenge: s256(verifier),
        code_challenge_method: "S256",
      })}`,
      { redirect: "manual" },
    );
    assertEquals(authorize.status, 302);
    const location = new URL(authorize.headers.get("location")!);
    const code = location.searchParams.get("code")!;
    assertEquals(location.searchParams.get("iss"), base);
    const token = (codeVerifier: string) =>
      fetch(`${base}/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({
          grant_type: "authorization_code",
          client_id: "demo-client",
          code,
          redirect_uri: redirectUri,
          code_verifier: codeVerifier,
        }),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));
    const issued = await token(verifier);
    assertEquals(issued.status, 200);
    assertMatch(issued.body.access_token, /^[A-Za-z0-9_-]{43}$/);
    const replay = await token(verifier);
    assertEquals(replay, {
      status: 400,
      body: {
        error: "invalid_grant",
        error_description: "invalid authorization code",
      },
    });
    // It migrated the default table into the schema of its search path.
    const [{ n }] = await t.sql<[{ n: number }]>`
      select count(*)::int as n from information_schema.tables
      where table_schema = ${t.schema}
        and table_name in ('authorization_codes', 'authorization_codes_spent')
    `;
    assertEquals(n, 2);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    const text = await log;
    for (const denied of ["NotCapable", "PermissionDenied", "Requires read"]) {
      assert(!text.includes(denied), text);
    }
  }
});
