/**
 * panva's oidc-provider, for real: the provider in Deno processes, real
 * HTTP, real PostgreSQL. Its token endpoint finds a code, checks it, and
 * consumes it later, with no lock; with the adapter, finding a code is the
 * store's take.
 */

import {
  assert,
  assertEquals,
  assertGreater,
  assertInstanceOf,
  assertStringIncludes,
} from "@std/assert";
import { createCodeStore } from "../mod.ts";
import {
  createOidcProviderAdapter,
  type OidcPayload,
  PkceRequiredError,
} from "../src/adapters/oidc_provider.ts";
import { postgresAdapter } from "../examples/oidc_postgres_adapter.ts";
import { newVerifier, s256 } from "../examples/pkce.ts";
import { storedCodes, testDatabase } from "./support/database.ts";
import {
  authorize,
  oidcDatabase,
  oidcWins,
  token,
} from "./support/oidc_flow.ts";
import {
  bursts as burstsOf,
  controlDoubles,
  type IssuedCode,
  type ServerProcess,
  startServer,
} from "./support/oauth_servers.ts";

const SERVER = new URL("./support/oidc_server.ts", import.meta.url);

interface Server extends ServerProcess {
  wins(): Promise<number>;
}

/** Starts an oidc-provider process (see `support/oidc_server.ts`). */
async function server(
  url: string,
  env: Record<string, string>,
): Promise<Server> {
  const process = await startServer(SERVER, { DATABASE_URL: url, ...env });
  return Object.assign(process, { wins: () => oidcWins(process.base) });
}

/** The control over `servers`: see `controlDoubles`. */
function controlOf(label: string, servers: Server[]): Promise<number> {
  return controlDoubles(
    label,
    servers,
    () => authorize(servers[0]!.base) as Promise<IssuedCode>,
    redeemAt,
  );
}

/** Whether a token request for the code at `base` got a token. */
async function redeemAt(base: string, { code, verifier }: IssuedCode) {
  return (await token(base, code, verifier)).status === 200;
}

/**
 * Issues `codes` codes one after another and presents each `per` times at
 * once, spread over `servers`; returns the tokens issued per code.
 */
async function bursts(servers: Server[], codes: number, per: number) {
  const { issued } = await burstsOf(
    servers,
    codes,
    per,
    () => authorize(servers[0]!.base) as Promise<IssuedCode>,
    redeemAt,
  );
  return issued;
}

Deno.test("oidc-provider with the adapter: the code + PKCE flow through custom interactions gives tokens; a replay with a wrong verifier revokes nothing, the client's own replay fails and the access token stops working", async () => {
  await using t = await oidcDatabase();
  await using op = await server(t.url, { MODE: "store" });
  const { code, verifier, params } = await authorize(op.base);
  assert(code, `no code: ${params}`);
  assertEquals(params.get("state"), "st4te");
  const issued = await token(op.base, code, verifier);
  assertEquals(issued.status, 200, JSON.stringify(issued.body));
  assert(issued.body.access_token && issued.body.id_token);
  const me = (accessToken: string) =>
    fetch(`${op.base}/me`, {
      headers: { authorization: `Bearer ${accessToken}` },
    }).then(async (r) => ({ status: r.status, body: await r.text() }));
  const before = await me(issued.body.access_token);
  assertEquals(before.status, 200);
  assertEquals(JSON.parse(before.body).sub, "demo-user");

  // A forged replay (a wrong verifier): invalid_grant, and nothing revoked
  // (oidc-provider checks PKCE against the tombstone before it revokes).
  const forged = await token(op.base, code, newVerifier());
  assertEquals(forged.status, 400);
  assertEquals(forged.body.error, "invalid_grant");
  assertEquals((await me(issued.body.access_token)).status, 200);

  // The replay, with the right verifier: invalid_grant, and oidc-provider
  // revokes the grant, so the access token stops working.
  const replay = await token(op.base, code, verifier);
  assertEquals(replay.status, 400);
  assertEquals(replay.body.error, "invalid_grant");
  assertEquals((await me(issued.body.access_token)).status, 401);
  assertEquals(await op.wins(), 1);
});

Deno.test("bursts of 50 concurrent token requests per code across 2 oidc-provider processes: exactly 1 token and 1 winning take per code", async () => {
  await using t = await oidcDatabase();
  // revokeGrantPolicy off: with it, the losers can revoke the grant before
  // the winner issues its token (0 tokens for a code), which counts nothing.
  await using a = await server(t.url, { MODE: "store", REVOKE: "never" });
  await using b = await server(t.url, { MODE: "store", REVOKE: "never" });
  const issued = await bursts([a, b], 5, 50);
  console.log(
    `oidc-provider with the adapter: tokens per code ${JSON.stringify(issued)}`,
  );
  assertEquals(issued, [1, 1, 1, 1, 1]);
  assertEquals(await a.wins() + await b.wins(), 5, "one winning take per code");
});

Deno.test("the control: the same bursts with a plain find-then-consume adapter over the same database, and with oidc-provider's in-memory adapter, issue more than one token for a code", async () => {
  await using t = await oidcDatabase();
  {
    await using a = await server(t.url, { MODE: "control", REVOKE: "never" });
    await using b = await server(t.url, { MODE: "control", REVOKE: "never" });
    assertGreater(
      await controlOf(
        "oidc-provider, find-then-consume PostgreSQL adapter, 2 processes",
        [a, b],
      ),
      1,
    );
  }
  {
    await using memory = await server(t.url, {
      MODE: "memory",
      REVOKE: "never",
    });
    // One process, an adapter with no I/O: the window between find and
    // consume is narrower, and some runs need dozens of codes to show it.
    assertGreater(
      await controlOf("oidc-provider, its in-memory adapter, 1 process", [
        memory,
      ]),
      1,
    );
  }
});

Deno.test("without required PKCE, the authorization request gets a clear invalid_request and no code is stored", async () => {
  await using t = await oidcDatabase();
  await using op = await server(t.url, { MODE: "store", PKCE: "optional" });
  const { code, params } = await authorize(op.base, { pkce: false });
  assertEquals(code, undefined);
  assertEquals(params.get("error"), "invalid_request");
  assertStringIncludes(params.get("error_description") ?? "", "PKCE");
  const [{ n }] = await t.sql<[{ n: number }]>`
    select count(*)::int as n from ${t.sql(`${t.schema}.authorization_codes`)}
  `;
  assertEquals(n, 0);
});

Deno.test("the adapter keeps every field of oidc-provider's code payload, and refuses one without S256", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  class Unused {
    constructor(readonly model: string) {}
  }
  const adapter = createOidcProviderAdapter(store, {
    // deno-lint-ignore no-explicit-any
    fallback: Unused as any,
  });
  assertEquals((adapter("Session") as unknown as Unused).model, "Session");
  const codes = adapter("AuthorizationCode");
  const now = Math.floor(Date.now() / 1000);
  const payloads: OidcPayload[] = [
    {
      iat: now,
      exp: now + 60,
      jti: newVerifier(),
      kind: "AuthorizationCode",
      clientId: "client-1",
      accountId: "user-1",
      redirectUri: "https://rp.example.com/cb",
      scope: "openid profile email",
      codeChallenge: s256(newVerifier()),
      codeChallengeMethod: "S256",
      nonce: "n-0S6_WzA2Mj",
      dpopJkt: s256("a key"),
      grantId: "grant-1",
      sessionUid: "session-uid-1",
      expiresWithSession: true,
      acr: "urn:mace:incommon:iap:silver",
      amr: ["pwd", "otp"],
      authTime: now - 30,
      sid: "sid-1",
      claims: { id_token: { email: { essential: true } } },
      resource: "https://api.example.com/",
      rar: [{ type: "payment_initiation", amount: 10 }],
      attestationJkt: s256("another key"),
      someFutureField: { added: "by a later oidc-provider" },
    },
    {
      iat: now,
      exp: now + 60,
      jti: newVerifier(),
      kind: "AuthorizationCode",
      clientId: "client-2",
      accountId: "user-2",
      redirectUri: "https://rp.example.com/cb",
      scope: "openid  offline_access",
      codeChallenge: s256(newVerifier()),
      codeChallengeMethod: "S256",
      claims: {},
      resource: ["https://a.example.com/", "https://b.example.com/"],
    },
  ];
  for (const payload of payloads) {
    const id = payload.jti as string;
    await codes.upsert(id, payload, 60);
    assertEquals(await codes.find(id), payload);
    const tombstone = await codes.find(id);
    assertEquals(tombstone?.consumed !== undefined, true);
    assertEquals(tombstone?.grantId, payload.grantId);
    assertEquals(tombstone?.codeChallenge, payload.codeChallenge);
  }
  // The grant's live codes are revoked by id.
  const live = { ...payloads[0]!, jti: newVerifier() };
  await codes.upsert(live.jti as string, live, 60);
  await codes.revokeByGrantId("grant-1");
  assertEquals(await codes.find(live.jti as string), undefined);
  // No S256 challenge: refused, as oidc-provider renders invalid_request.
  for (const method of [undefined, "plain"]) {
    const error = await codes.upsert(newVerifier(), {
      ...payloads[1]!,
      codeChallengeMethod: method,
    }, 60).catch((e) => e);
    assertInstanceOf(error, PkceRequiredError);
    assertEquals(error.statusCode, 400);
    // oidc-provider sends an exposed error's message as the OAuth `error`.
    assertEquals(error.message, "invalid_request");
    assertEquals(error.error, "invalid_request");
  }
  assertEquals(await storedCodes(t), 0);
});

Deno.test("the adapter takes a class or a factory for the other models, as oidc-provider does", async () => {
  await using t = await oidcDatabase();
  const store = createCodeStore(t.sql);
  const Fallback = postgresAdapter(t.sql);
  for (const fallback of [Fallback, (model: string) => new Fallback(model)]) {
    const adapter = createOidcProviderAdapter(store, { fallback });
    // oidc-provider calls a function without a prototype as a factory.
    assertEquals(adapter.prototype, undefined);
    const sessions = adapter("Session");
    await sessions.upsert("s1", { uid: "u1", accountId: "a" }, 60);
    assertEquals((await sessions.findByUid("u1"))?.accountId, "a");
  }
});
