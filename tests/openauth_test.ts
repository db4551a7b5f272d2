/**
 * OpenAuth 0.4.3, for real: `examples/openauth_issuer.ts` (a Hono issuer)
 * in Deno processes, real HTTP, real PostgreSQL, codes issued and redeemed
 * through OpenAuth's own client (`createClient`, PKCE S256); the control
 * keeps codes in the issuer's usual storage over the same database.
 */

import { assert, assertEquals, assertGreater } from "@std/assert";
import { authorize, client, exchange } from "./support/openauth_flow.ts";
import {
  bursts,
  controlDoubles,
  REDIRECT_URI,
  type ServerDatabase,
  serverDatabase,
  type ServerProcess,
  startServer,
} from "./support/oauth_servers.ts";
import { newVerifier } from "../examples/pkce.ts";

const PROGRAM = new URL("../examples/openauth_issuer.ts", import.meta.url);

function server(url: string, mode = "store"): Promise<ServerProcess> {
  return startServer(PROGRAM, { DATABASE_URL: url, MODE: mode });
}

async function refreshTokens(t: ServerDatabase): Promise<number> {
  const [{ n }] = await t.sql<[{ n: number }]>`
    select count(*)::int as n from ${t.sql(`${t.schema}.openauth_kv`)}
    where starts_with(key, 'oauth:refresh')
  `;
  return n;
}

Deno.test("OpenAuth with `createOpenAuthStorage`: its client's code + PKCE flow gives tokens; a replay is refused", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url);
  const issued = await authorize(s.base);
  assert(issued.code, `no code: ${issued.params}`);
  const first = await client(s.base).exchange(
    issued.code,
    REDIRECT_URI,
    issued.verifier,
  );
  assert(!first.err, String(first.err));
  assert(first.tokens.access);
  assertEquals(await exchange(s.base, issued), false, "a replay is refused");
  assertEquals(await refreshTokens(t), 1);
});

Deno.test("bursts of 50 concurrent token requests per code across 2 OpenAuth processes: exactly 1 token per code, no token stored for a loser", async () => {
  await using t = await serverDatabase();
  await using a = await server(t.url);
  await using b = await server(t.url);
  const { issued } = await bursts(
    [a, b],
    5,
    50,
    () => authorize(a.base),
    exchange,
  );
  console.log(
    `OpenAuth with createOpenAuthStorage: tokens per code ${
      JSON.stringify(issued)
    }`,
  );
  assertEquals(issued, [1, 1, 1, 1, 1]);
  assertEquals(await refreshTokens(t), 5, "one stored refresh token per code");
});

Deno.test("OpenAuth with `createOpenAuthStorage`: a wrong code_verifier spends the code; an expired code gets no token", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url);
  const issued = await authorize(s.base);
  assertEquals(
    await exchange(s.base, { ...issued, verifier: newVerifier() }),
    false,
  );
  assertEquals(await exchange(s.base, issued), false, "spent by the wrong one");

  const old = await authorize(s.base);
  await t.expireCodes();
  assertEquals(await exchange(s.base, old), false);
  assertEquals(await refreshTokens(t), 0);
});

Deno.test("OpenAuth's client without PKCE: the code is refused with a clear error, nothing is stored, the issuer lives on", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url);
  const refused = await authorize(s.base, { pkce: false });
  assertEquals(refused.code, "");
  assertEquals(refused.params.get("error"), "server_error");
  assert(refused.params.get("error_description")?.includes("PKCE"));
  assertEquals(await t.storedCodes(), 0);
  const ok = await authorize(s.base);
  assert(await exchange(s.base, ok));
});

Deno.test("the control: OpenAuth with its codes in its usual storage (get, then remove; 1 ms of latency) issues more than one token for some code", async () => {
  await using t = await serverDatabase();
  await using a = await server(t.url, "control");
  await using b = await server(t.url, "control");
  assertGreater(
    await controlDoubles(
      "OpenAuth, its usual storage",
      [a, b],
      () => authorize(a.base),
      exchange,
    ),
    1,
  );
});
