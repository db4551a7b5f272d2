/**
 * Deno Deploy readiness: the published module needs no filesystem access,
 * and the README's Deploy entry point works as written.
 */

import { assertEquals, assertStringIncludes } from "@std/assert";
import { databaseUrl, grant, testDatabase } from "./support/database.ts";

const ENTRY = new URL("../examples/deploy.ts", import.meta.url).pathname;

Deno.test("the Deploy entry point runs with only net and env permissions: no filesystem access", async () => {
  await using t = await testDatabase();
  const url = new URL(databaseUrl());
  url.searchParams.set("search_path", t.schema);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const child = new Deno.Command(Deno.execPath(), {
    // No --allow-read, --allow-write, --allow-sys, --allow-run, --allow-ffi.
    args: ["run", "--allow-net", "--allow-env", ENTRY],
    env: { DATABASE_URL: url.href, PORT: String(port) },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    const base = `http://127.0.0.1:${port}`;
    for (let tries = 0;; tries++) {
      try {
        await (await fetch(`${base}/`)).body?.cancel();
        break;
      } catch (error) {
        if (tries > 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    const issued = await fetch(`${base}/codes`, {
      method: "POST",
      body: JSON.stringify(grant()),
    });
    assertEquals(issued.status, 200);
    const { code } = await issued.json();
    const redeem = () =>
      fetch(`${base}/token`, {
        method: "POST",
        body: new URLSearchParams({ code }),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));
    assertEquals(await redeem(), {
      status: 200,
      body: { subject: "user-42" },
    });
    assertEquals(await redeem(), {
      status: 400,
      body: { error: "invalid_grant" },
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
    const { stderr } = await child.output();
    const log = new TextDecoder().decode(stderr);
    for (const denied of ["NotCapable", "PermissionDenied", "Requires read"]) {
      assertEquals(log.includes(denied), false, log);
    }
  }
});

Deno.test("the README's Deploy section shows examples/deploy.ts as it is", async () => {
  const readme = await Deno.readTextFile(
    new URL("../README.md", import.meta.url),
  );
  const code = await Deno.readTextFile(ENTRY);
  const section = readme.slice(readme.indexOf("## Deploying on Deno Deploy"));
  assertStringIncludes(
    section,
    code.replace("// A minimal Deno Deploy entry point using the store.\n", ""),
  );
});
