/**
 * `@jmondi/oauth2-server` 4.3 (ts-oauth2-server), for real:
 * `examples/ts_oauth2_server.ts` on the library's Fetch adapter in Deno
 * processes, real HTTP, real PostgreSQL, with JWT and opaque codes; the
 * control is the library's example repository over the same database.
 */

import { assert, assertEquals, assertGreater } from "@std/assert";
import {
  authorize,
  bursts,
  controlDoubles,
  newVerifier,
  redeem,
  serverDatabase,
  type ServerProcess,
  startServer,
  token,
} from "./support/oauth_servers.ts";

const PROGRAM = new URL("../examples/ts_oauth2_server.ts", import.meta.url);

function server(
  url: string,
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  return startServer(PROGRAM, { DATABASE_URL: url, ...env });
}

for (const codes of ["jwt", "opaque"]) {
  Deno.test(`ts-oauth2-server with \`createAuthCodeRepository\` (${codes} codes): the code + PKCE flow gives a token; a replay is refused`, async () => {
    await using t = await serverDatabase();
    await using s = await server(t.url, { CODES: codes });
    const issued = await authorize(s.base);
    assert(issued.code, `no code: ${issued.params}`);
    assertEquals(issued.params.get("state"), "st4te");
    const first = await token(s.base, issued);
    assertEquals(first.status, 200, JSON.stringify(first.body));
    assert(first.body.access_token);
    const replay = await token(s.base, issued);
    assertEquals(replay.status, 400, JSON.stringify(replay.body));
    assertEquals(await t.tokens(), 1);
  });

  Deno.test(`bursts of 50 concurrent token requests per code across 2 ts-oauth2-server processes (${codes} codes): exactly 1 token per code, no token stored for a loser`, async () => {
    await using t = await serverDatabase();
    await using a = await server(t.url, { CODES: codes });
    await using b = await server(t.url, { CODES: codes });
    const { issued } = await bursts(
      [a, b],
      5,
      50,
      () => authorize(a.base),
      redeem,
    );
    console.log(
      `ts-oauth2-server (${codes} codes) with createAuthCodeRepository: tokens per code ${
        JSON.stringify(issued)
      }`,
    );
    assertEquals(issued, [1, 1, 1, 1, 1]);
    assertEquals(await t.tokens(), 5, "one stored token per code");
  });

  Deno.test(`ts-oauth2-server with \`createAuthCodeRepository\` (${codes} codes): a wrong code_verifier spends the code; an expired code gets no token`, async () => {
    await using t = await serverDatabase();
    await using s = await server(t.url, { CODES: codes });
    const issued = await authorize(s.base);
    const wrong = await token(s.base, { ...issued, verifier: newVerifier() });
    assertEquals(wrong.status, 400, JSON.stringify(wrong.body));
    const right = await token(s.base, issued);
    assertEquals(right.status, 400, "the code was spent by the wrong verifier");

    const old = await authorize(s.base);
    await t.expireCodes();
    const late = await token(s.base, old);
    assertEquals(late.status, 400, JSON.stringify(late.body));
    assertEquals(await t.tokens(), 0);
  });
}

Deno.test("ts-oauth2-server letting a request without PKCE through: the code is refused with a clear error, nothing is stored, the server lives on", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url, { PKCE: "optional" });
  const refused = await authorize(s.base, { pkce: false });
  assertEquals(refused.code, "");
  assert(refused.params.get("body")?.includes("PKCE"), `${refused.params}`);
  assertEquals(await t.storedCodes(), 0);
  const ok = await authorize(s.base);
  assertEquals((await token(s.base, ok)).status, 200);
});

Deno.test("the control: ts-oauth2-server with its example repository (isRevoked reads, revoke after the tokens, 1 ms of latency) issues more than one token for some code", async () => {
  await using t = await serverDatabase();
  await using a = await server(t.url, { MODE: "control" });
  await using b = await server(t.url, { MODE: "control" });
  assertGreater(
    await controlDoubles(
      "ts-oauth2-server, its example repository",
      [a, b],
      () => authorize(a.base),
      redeem,
    ),
    1,
  );
});
