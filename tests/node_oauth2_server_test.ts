/**
 * `@node-oauth/oauth2-server` 5.3, for real: `examples/node_oauth2_server.ts`
 * in Deno processes, real HTTP, real PostgreSQL, with the code store's
 * model (`createCodeStoreModel`) and, as the control, the usual model.
 */

import { createServer } from "node:http";
import { assert, assertEquals, assertGreater } from "@std/assert";
import postgres from "postgres";
import {
  type Accounts,
  DEMO_ACCOUNTS,
  handler,
} from "../examples/node_oauth2_server.ts";
import { createMemoryCodeStore } from "../src/memory_store.ts";
import {
  codeStoreModel,
  createCodeStoreModel,
} from "../src/adapters/node_oauth2_server.ts";
import {
  authorize,
  bursts,
  controlDoubles,
  newVerifier,
  redeem,
  rowWithoutSecrets,
  SECRETIVE_CLIENT_FIELDS,
  secretiveUser,
  SECRETS,
  serverDatabase,
  type ServerProcess,
  startServer,
  token,
} from "./support/oauth_servers.ts";

const PROGRAM = new URL("../examples/node_oauth2_server.ts", import.meta.url);

function server(url: string, mode: string): Promise<ServerProcess> {
  return startServer(PROGRAM, { DATABASE_URL: url, MODE: mode });
}

Deno.test("node-oauth2-server with `createCodeStoreModel`: the code + PKCE flow gives a token; a replay is refused", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url, "store");
  const issued = await authorize(s.base);
  assert(issued.code, `no code: ${issued.params}`);
  assertEquals(issued.params.get("state"), "st4te");
  const first = await token(s.base, issued);
  assertEquals(first.status, 200, JSON.stringify(first.body));
  assert(first.body.access_token);
  const replay = await token(s.base, issued);
  assertEquals(replay.status, 400);
  assertEquals(replay.body.error, "invalid_grant");
  assertEquals(await t.tokensFor(issued.code), 1);
});

Deno.test("bursts of 50 concurrent token requests per code across 2 node-oauth2-server processes: exactly 1 token per code, no token stored for a loser", async () => {
  await using t = await serverDatabase();
  await using a = await server(t.url, "store");
  await using b = await server(t.url, "store");
  const { issued, codes } = await bursts(
    [a, b],
    5,
    50,
    () => authorize(a.base),
    redeem,
  );
  console.log(
    `node-oauth2-server with createCodeStoreModel: tokens per code ${
      JSON.stringify(issued)
    }`,
  );
  assertEquals(issued, [1, 1, 1, 1, 1]);
  for (const { code } of codes) assertEquals(await t.tokensFor(code), 1);
});

Deno.test("node-oauth2-server with `createCodeStoreModel`: a wrong code_verifier spends the code; an expired code gets no token", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url, "store");
  const issued = await authorize(s.base);
  const wrong = await token(s.base, { ...issued, verifier: newVerifier() });
  assertEquals(wrong.status, 400);
  assertEquals(wrong.body.error, "invalid_grant");
  const right = await token(s.base, issued);
  assertEquals(right.status, 400, "the code was spent by the wrong verifier");
  assertEquals(await t.tokensFor(issued.code), 0);

  const old = await authorize(s.base);
  await t.expireCodes();
  const late = await token(s.base, old);
  assertEquals(late.status, 400, JSON.stringify(late.body));
  assertEquals(late.body.error, "invalid_grant");
  assertEquals(await t.tokensFor(old.code), 0);
});

Deno.test("node-oauth2-server without PKCE: the authorization request fails with a clear error, nothing is stored, the server lives on", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url, "store");
  const refused = await authorize(s.base, { pkce: false });
  assertEquals(refused.code, "");
  assertEquals(refused.params.get("error"), "server_error");
  assert(refused.params.get("error_description")?.includes("PKCE"));
  assertEquals(await t.storedCodes(), 0);
  const ok = await authorize(s.base);
  assertEquals((await token(s.base, ok)).status, 200);
});

Deno.test("the control: node-oauth2-server's usual model (a read, then a delete that reports success, 1 ms of latency) issues more than one token for some code", async () => {
  await using t = await serverDatabase();
  await using a = await server(t.url, "control");
  await using b = await server(t.url, "control");
  assertGreater(
    await controlDoubles(
      "node-oauth2-server, its usual model",
      [a, b],
      () => authorize(a.base),
      redeem,
    ),
    1,
  );
});

const SECRETIVE: Accounts = {
  client: {
    ...DEMO_ACCOUNTS.client,
    ...SECRETIVE_CLIENT_FIELDS,
    secret: SECRETS.secret,
  },
  user: secretiveUser("user-42"),
};

Deno.test("node-oauth2-server: no nested or oddly named secret of the client or the user reaches the stored row, and the flow still passes", async () => {
  await using t = await serverDatabase();
  const sql = postgres(t.url, { max: 2, onnotice: () => {} });
  const http = createServer(handler(sql, "store", SECRETIVE));
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = http.address() as { port: number };
    const base = `http://127.0.0.1:${port}`;
    const issued = await authorize(base);
    assert(issued.code, `no code: ${issued.params}`);
    const row = await rowWithoutSecrets(t);
    assertEquals(JSON.parse(row).context, { userId: "user-42" });
    const first = await token(base, issued);
    assertEquals(first.status, 200, JSON.stringify(first.body));
    assertEquals((await token(base, issued)).status, 400);
    assertEquals(await t.tokensFor(issued.code), 1);
  } finally {
    http.closeAllConnections();
    await new Promise((resolve) => http.close(resolve));
    await sql.end({ timeout: 5 });
  }
});

Deno.test("`createCodeStoreModel` gives the code's user back as `{ id }` (its own id, or the subject), and `codeStoreModel` is the same factory", async () => {
  const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
  const save = {
    expiresAt: new Date(Date.now() + 60_000),
    redirectUri: "https://client.example.org/cb",
    scope: ["read"],
    codeChallenge: challenge,
    codeChallengeMethod: "S256",
  };
  const client = { id: "s6BhdRkqt3", secret: SECRETS.secret };
  for (const factory of [createCodeStoreModel, codeStoreModel]) {
    const model = factory(createMemoryCodeStore());
    await model.saveAuthorizationCode(
      { ...save, authorizationCode: "numeric-id-code-0001" },
      client,
      { id: 42, password: SECRETS.password },
    );
    const code = await model.getAuthorizationCode("numeric-id-code-0001");
    assert(code);
    assertEquals(code.user, { id: 42 });
    assertEquals(code.client, { id: "s6BhdRkqt3" });
  }
  const custom = createCodeStoreModel(createMemoryCodeStore(), {
    subject: (user) => String(user.username),
  });
  await custom.saveAuthorizationCode(
    { ...save, authorizationCode: "custom-subject-0001" },
    client,
    { username: "alice", passwordDigest: SECRETS.passwordDigest },
  );
  const code = await custom.getAuthorizationCode("custom-subject-0001");
  assertEquals(code && code.user, { id: "alice" });
});
