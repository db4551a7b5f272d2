/**
 * `@jmondi/oauth2-server` 4.3 (ts-oauth2-server), for real:
 * `examples/ts_oauth2_server.ts` on the library's Fetch adapter in Deno
 * processes, real HTTP, real PostgreSQL, with JWT and opaque codes; the
 * control is the library's example repository over the same database.
 */

import {
  assert,
  assertEquals,
  assertGreater,
  assertInstanceOf,
  assertLessOrEqual,
  assertRejects,
  assertThrows,
} from "@std/assert";
import postgres from "postgres";
import {
  type Accounts,
  authorizationServer,
  DEMO_ACCOUNTS,
  handler,
  OTHER_CLIENT_ID,
} from "../examples/ts_oauth2_server.ts";
import { createMemoryCodeStore } from "../src/memory_store.ts";
import {
  createAuthCodeRepository,
  InvalidAuthorizationCodeError,
  type TsOAuth2AuthCode,
} from "../src/adapters/ts_oauth2_server.ts";
import { CodeStoreError } from "../mod.ts";
import {
  authorize,
  bursts,
  controlDoubles,
  newVerifier,
  redeem,
  rowWithoutSecrets,
  s256,
  SECRETIVE_CLIENT_FIELDS,
  secretiveUser,
  SECRETS,
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

Deno.test("ts-oauth2-server with opaque codes and `createAuthCodeRepository(store)`, no option: the code is redeemed once and leaves the store (before: every redemption failed with invalid_grant and the code stayed live)", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url, { CODES: "opaque" });
  const issued = await authorize(s.base);
  assertEquals(await t.storedCodes(), 1);
  const first = await token(s.base, issued);
  assertEquals(first.status, 200, JSON.stringify(first.body));
  assertEquals(await t.storedCodes(), 0, "the code was spent");
  const replay = await token(s.base, issued);
  assertEquals(replay.status, 400, JSON.stringify(replay.body));
  assertEquals(replay.body.error, "invalid_grant");
  assertEquals(await t.tokens(), 1);
});

for (const codes of ["jwt", "opaque"]) {
  for (const processes of [1, 2]) {
    Deno.test(`ts-oauth2-server (${codes} codes, ${processes} process${processes > 1 ? "es" : ""}): 50 concurrent requests with one code from its client get exactly 1 token; 20 from its client and another get at most 1, never the other's, and spend the code`, async () => {
      await using t = await serverDatabase();
      const servers: ServerProcess[] = [];
      try {
        for (let i = 0; i < processes; i++) {
          servers.push(await server(t.url, { CODES: codes }));
        }
        const same = await bursts(
          servers,
          5,
          50,
          () => authorize(servers[0]!.base),
          redeem,
        );
        assertEquals(same.issued, [1, 1, 1, 1, 1]);

        const perCode: number[] = [];
        let others = 0;
        for (let i = 0; i < 5; i++) {
          const issued = await authorize(servers[0]!.base);
          const answers = await Promise.all(
            Array.from({ length: 20 }, (_, j) =>
              token(
                servers[j % servers.length]!.base,
                issued,
                j % 2 === 0 ? {} : { client_id: OTHER_CLIENT_ID },
              ).then((r) => ({ other: j % 2 === 1, ok: r.status === 200 }))),
          );
          others += answers.filter((a) => a.other && a.ok).length;
          perCode.push(answers.filter((a) => a.ok).length);
        }
        console.log(
          `ts-oauth2-server (${codes}, ${processes} process(es)): its client alone [1,1,1,1,1]; with another client, tokens per code ${
            JSON.stringify(perCode)
          }`,
        );
        assertEquals(others, 0, "the other client never gets a token");
        for (const n of perCode) assertLessOrEqual(n, 1);
        assertEquals(await t.storedCodes(), 0, "every code is spent");
        assertEquals(
          await t.tokens(),
          5 + perCode.reduce((a, b) => a + b, 0),
        );
      } finally {
        for (const s of servers) await s[Symbol.asyncDispose]();
      }
    });
  }
}

const SECRETIVE: Accounts = {
  clients: DEMO_ACCOUNTS.clients.map((client) => ({
    ...client,
    ...SECRETIVE_CLIENT_FIELDS,
    secret: null, // a public client, as the flow sends no secret
    scopes: [{ name: "read", signingSecret: SECRETS.secret }],
  })),
  user: secretiveUser,
};

for (const codes of ["jwt", "opaque"]) {
  Deno.test(`ts-oauth2-server (${codes} codes): no nested or oddly named secret of the client or the user reaches the stored row, and the flow still passes`, async () => {
    await using t = await serverDatabase();
    const sql = postgres(t.url, { max: 2, onnotice: () => {} });
    const http = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      handler(
        authorizationServer(
          sql,
          { mode: "store", codes, pkce: "required" },
          SECRETIVE,
        ),
      ),
    );
    try {
      const base = `http://127.0.0.1:${http.addr.port}`;
      const issued = await authorize(base);
      assert(issued.code, `no code: ${issued.params}`);
      const row = await rowWithoutSecrets(t);
      assertEquals(JSON.parse(row).context.userId, "user-42");
      const first = await token(base, issued);
      assertEquals(first.status, 200, JSON.stringify(first.body));
      assertEquals((await token(base, issued)).status, 400);
    } finally {
      await http.shutdown();
      await sql.end({ timeout: 5 });
    }
  });
}

/** A code as the library issues it, ready to persist. */
function issue(
  repository: ReturnType<typeof createAuthCodeRepository>,
): TsOAuth2AuthCode {
  const [client] = DEMO_ACCOUNTS.clients;
  const code = repository.issueAuthCode(client!, { id: 42 }, [{
    name: "read",
  }]);
  code.expiresAt = new Date(Date.now() + 60_000);
  code.redirectUri = "https://client.example.org/cb";
  code.codeChallenge = s256(newVerifier());
  code.codeChallengeMethod = "S256";
  return code;
}

Deno.test("`createAuthCodeRepository` follows either call order with no option (JWT: isRevoked then getByIdentifier; opaque: the reverse), with the deprecated `opaque` of either value, and concurrent first calls take a code once", async () => {
  for (const options of [{}, { opaque: true }, { opaque: false }]) {
    const repository = createAuthCodeRepository(
      createMemoryCodeStore(),
      options,
    );
    // JWT codes: isRevoked takes, getByIdentifier hands over, revoke is a no-op.
    const jwt = issue(repository);
    await repository.persist(jwt);
    const firsts = await Promise.all(
      [0, 1, 2].map(() => repository.isRevoked(jwt.code)),
    );
    assertEquals(firsts.filter((revoked) => !revoked).length, 1);
    const got = await repository.getByIdentifier(jwt.code);
    assertEquals(got.user?.id, 42, "the user's id keeps its type");
    assertEquals(got.client.id, "demo-client");
    assertEquals(
      got.client.redirectUris,
      DEMO_ACCOUNTS.clients[0]!.redirectUris,
    );
    assertEquals(got.scopes, [{ name: "read" }]);
    await repository.revoke(jwt.code);
    assertEquals(await repository.isRevoked(jwt.code), true);

    // Opaque codes: getByIdentifier takes, isRevoked hands over.
    const opaque = issue(repository);
    await repository.persist(opaque);
    const takes = await Promise.allSettled(
      [0, 1, 2].map(() => repository.getByIdentifier(opaque.code)),
    );
    assertEquals(takes.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of takes) {
      if (r.status === "rejected") {
        assertInstanceOf(r.reason, InvalidAuthorizationCodeError);
      }
    }
    assertEquals(await repository.isRevoked(opaque.code), false);
    assertEquals(await repository.isRevoked(opaque.code), true);
    await repository.revoke(opaque.code);
    const error = await assertRejects(
      () => repository.getByIdentifier(opaque.code),
      InvalidAuthorizationCodeError,
    );
    assertInstanceOf(error, CodeStoreError);
    assertEquals(error.code, "ERR_INVALID_AUTHORIZATION_CODE");
    assertEquals([error.oauth, error.status, error.errorType], [
      true,
      400,
      "invalid_grant",
    ]);
  }
  const notBoolean = { opaque: 1 } as unknown as { opaque: boolean };
  assertThrows(
    () => createAuthCodeRepository(createMemoryCodeStore(), notBoolean),
    TypeError,
  );
});
