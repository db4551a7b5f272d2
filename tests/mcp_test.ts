/**
 * The official TypeScript MCP SDK (`@modelcontextprotocol/sdk` 1.32.2), for
 * real: `examples/mcp_server.ts`, the SDK's `mcpAuthRouter` over a provider
 * built on `createMcpAuthorizationCodes`, in Deno processes, real HTTP, real
 * PostgreSQL; the control is the same router over the usual provider (the
 * row read for the challenge, then read and deleted in the exchange). The
 * adapter is typed against the SDK's own types here.
 */

import {
  assert,
  assertEquals,
  assertGreater,
  assertInstanceOf,
  assertMatch,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
// The SDK's real types: in Deno the `.js` subpaths resolve to `any`, the
// extensionless ones to the declarations.
import type {
  AuthorizationParams,
  OAuthServerProvider,
} from "@modelcontextprotocol/sdk/server/auth/provider";
import type { OAuthClientInformationFull } from "@modelcontextprotocol/sdk/shared/auth";
import { createCodeStore, hashCode, InvalidRecordError } from "../mod.ts";
import {
  createMcpAuthorizationCodes,
  type McpAuthorizationCodes,
} from "../src/adapters/mcp.ts";
import { storedCodes, testDatabase, until } from "./support/database.ts";
import {
  authorize,
  bursts,
  CLIENT_ID,
  controlDoubles,
  type IssuedCode,
  newVerifier,
  REDIRECT_URI,
  type ServerDatabase,
  serverDatabase,
  type ServerProcess,
  startServer,
  token,
} from "./support/oauth_servers.ts";
import { OTHER_CLIENT_ID, SUBJECT } from "../examples/mcp_server.ts";
import { s256 } from "../examples/pkce.ts";

const PROGRAM = new URL("../examples/mcp_server.ts", import.meta.url);
/** The processes' common public URL, as behind one load balancer. */
const ISSUER = "https://mcp.example.com";
const RESOURCE = `${ISSUER}/mcp`;

function server(url: string, mode = "store"): Promise<ServerProcess> {
  return startServer(PROGRAM, { DATABASE_URL: url, ISSUER, MODE: mode });
}

/** A code for the MCP resource, through the SDK's authorization endpoint. */
function issue(base: string) {
  return authorize(base, { resource: RESOURCE });
}

/** Token sets stored for `code` (by its hash), by any process. */
async function tokenSets(t: ServerDatabase, code: string): Promise<number> {
  const [{ n }] = await t.sql<[{ n: number }]>`
    select count(*)::int as n from ${t.sql(`${t.schema}.mcp_tokens`)}
    where code_hash = ${hashCode(code)}
  `;
  return n;
}

/** Calls the `whoami` tool with an access token: the status and the result. */
async function whoami(
  base: string,
  accessToken: string,
): Promise<{ status: number; body: string }> {
  const response = await fetch(`${base}/mcp`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${accessToken}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "tools/call",
      params: { name: "whoami", arguments: {} },
    }),
  });
  return { status: response.status, body: await response.text() };
}

Deno.test("the MCP SDK's router with a provider on `createMcpAuthorizationCodes`: the code + PKCE flow gives a token the MCP endpoint accepts; a replay is 400 invalid_grant and revokes it", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url);
  const issued = await issue(s.base);
  assert(issued.code, `no code: ${issued.params}`);
  assertEquals(issued.params.get("state"), "st4te");
  const first = await token(s.base, issued, { resource: RESOURCE });
  assertEquals(first.status, 200, JSON.stringify(first.body));
  const accessToken = first.body.access_token!;
  const me = await whoami(s.base, accessToken);
  assertEquals(me.status, 200, me.body);
  assertStringIncludes(me.body, `\\"subject\\":\\"${SUBJECT}\\"`);

  const replay = await token(s.base, issued);
  assertEquals(replay.status, 400);
  assertEquals(replay.body.error, "invalid_grant");
  assertEquals((await whoami(s.base, accessToken)).status, 401);
  assertEquals(await tokenSets(t, issued.code), 1);
});

Deno.test("a replay with a wrong verifier, from another client or with another redirect_uri revokes nothing; the client's own valid replay does", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url);
  const issued = await issue(s.base);
  const first = await token(s.base, issued);
  assertEquals(first.status, 200, JSON.stringify(first.body));
  const live = async () =>
    (await whoami(s.base, first.body.access_token!)).status;
  assertEquals(await live(), 200);

  for (
    const form of [
      { code_verifier: newVerifier() },
      { client_id: OTHER_CLIENT_ID },
      { redirect_uri: "http://127.0.0.1/elsewhere" },
    ]
  ) {
    const forged = await token(s.base, issued, form);
    assertEquals(forged.status, 400, JSON.stringify(form));
    assertEquals(forged.body.error, "invalid_grant");
    assertEquals(await live(), 200, `revoked by ${JSON.stringify(form)}`);
  }
  const valid = await token(s.base, issued, { redirect_uri: "" });
  assertEquals(valid.status, 400);
  assertEquals(valid.body.error, "invalid_grant");
  assertEquals(await live(), 401, "revoked by the valid replay");
});

Deno.test("bursts of 50 concurrent token requests per code across 2 MCP SDK processes (5 codes): exactly 1 token set per code, every loser 400 invalid_grant, and every token revoked by the burst's replays whatever the order", async () => {
  await using t = await serverDatabase();
  await using a = await server(t.url);
  await using b = await server(t.url);
  const losers: string[] = [];
  const won = new Map<string, string>();
  const { issued, codes } = await bursts(
    [a, b],
    5,
    50,
    () => issue(a.base),
    async (base: string, code: IssuedCode) => {
      const { status, body } = await token(base, code);
      if (status === 200) won.set(code.code, body.access_token!);
      else losers.push(`${status} ${body.error}`);
      return status === 200;
    },
  );
  console.log(
    `MCP SDK with createMcpAuthorizationCodes: tokens per code ${
      JSON.stringify(issued)
    }; ${losers.length} losers: ${[...new Set(losers)].join(", ")}`,
  );
  assertEquals(issued, [1, 1, 1, 1, 1]);
  assertEquals(losers, Array(245).fill("400 invalid_grant"));
  for (const { code } of codes) {
    assertEquals(await tokenSets(t, code), 1, "one token set stored per code");
    // 49 valid replays each: the token is refused, even when one was
    // recorded before the winner stored it.
    assertEquals((await whoami(a.base, won.get(code)!)).status, 401);
  }
});

Deno.test("the example's revocation holds when the replay comes before the winner has stored its token", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url);
  // The winner's token insert waits for a lock the test holds.
  const key = Math.floor(Math.random() * 2 ** 31);
  const tokens = t.sql(`${t.schema}.mcp_tokens`);
  await t.sql.unsafe(`
    create function ${t.schema}.hold() returns trigger language plpgsql as
      $$ begin perform pg_advisory_xact_lock_shared(${key}); return new; end $$;
  `);
  await t.sql`
    create trigger hold before insert on ${tokens}
    for each row execute function ${t.sql(`${t.schema}.hold`)}()
  `;
  const locker = await t.sql.reserve();
  let winner;
  try {
    await locker`select pg_advisory_lock(${key})`;
    const issued = await issue(s.base);
    winner = token(s.base, issued);
    await until(
      async () => {
        const [{ n }] = await t.sql<[{ n: number }]>`
          select count(*)::int as n from pg_locks
          where locktype = 'advisory' and objid = ${key} and not granted
        `;
        return n === 1;
      },
      30_000,
      "the winner waiting to store its token",
    );
    const replay = await token(s.base, issued);
    assertEquals(replay.status, 400);
    assertEquals(replay.body.error, "invalid_grant");
  } finally {
    await locker`select pg_advisory_unlock(${key})`;
    locker.release();
  }
  const won = await winner;
  assertEquals(won.status, 200, JSON.stringify(won.body));
  assertEquals((await whoami(s.base, won.body.access_token!)).status, 401);
});

Deno.test("with `createMcpAuthorizationCodes`: a wrong redirect_uri, verifier, resource or client spends the code; an expired code gets no token; an omitted redirect_uri is not compared", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url);
  const wrongs = [
    { redirect_uri: "http://127.0.0.1/elsewhere" },
    { code_verifier: newVerifier() },
    { resource: "https://other.example.com/mcp" },
    { client_id: OTHER_CLIENT_ID },
  ];
  for (const form of wrongs) {
    const issued = await issue(s.base);
    const wrong = await token(s.base, issued, form);
    assertEquals(wrong.status, 400, JSON.stringify(form));
    assertEquals(wrong.body.error, "invalid_grant");
    const right = await token(s.base, issued);
    assertEquals(right.status, 400, `spent by ${JSON.stringify(form)}`);
    assertEquals(right.body.error, "invalid_grant");
  }

  const old = await issue(s.base);
  await t.expireCodes();
  const late = await token(s.base, old);
  assertEquals(late.status, 400);
  assertEquals(late.body.error, "invalid_grant");
  assertEquals(await t.tokens(), 0);
  assertEquals(await tokenSets(t, old.code), 0);

  const omitted = await issue(s.base);
  const ok = await token(s.base, omitted, { redirect_uri: "" });
  assertEquals(ok.status, 200, JSON.stringify(ok.body));
});

Deno.test("a resource indicator with a fragment is refused at the authorization endpoint with invalid_target, a malformed code_challenge with invalid_request; nothing is stored", async () => {
  await using t = await serverDatabase();
  await using s = await server(t.url);
  const refused = await authorize(s.base, { resource: `${RESOURCE}#part` });
  assertEquals(refused.code, "");
  assertEquals(refused.params.get("error"), "invalid_target");
  assertStringIncludes(refused.params.get("error_description")!, "fragment");
  // The SDK takes any string as code_challenge; the store does not.
  const response = await fetch(
    `${s.base}/authorize?${new URLSearchParams({
      response_type: "code",
      client_id: CLIENT_ID,
      redirect_uri: REDIRECT_URI,
      code_challenge: "too-short",
      code_challenge_method: "S256",
    })}`,
    { redirect: "manual" },
  );
  await response.body?.cancel();
  const error = new URL(response.headers.get("location")!).searchParams;
  assertEquals(error.get("error"), "invalid_request");
  assertStringIncludes(error.get("error_description")!, "codeChallenge");
  assertEquals(await t.storedCodes(), 0);
  assert((await issue(s.base)).code, "the server lives on");
});

Deno.test("the control: the same router over the usual provider (the row read for the challenge, then select and delete), 2 processes, mints more than one token set for some code", async () => {
  await using t = await serverDatabase();
  await using a = await server(t.url, "control");
  await using b = await server(t.url, "control");
  const statuses = new Set<string>();
  assertGreater(
    await controlDoubles(
      "MCP SDK, the usual provider",
      [a, b],
      () => issue(a.base),
      async (base, code) => {
        const { status, body } = await token(base, code);
        if (status !== 200) statuses.add(`${status} ${body.error}`);
        return status === 200;
      },
    ),
    1,
  );
  console.log(`control losers: ${[...statuses].join(", ")}`);
});

// The adapter against the SDK's own types, and as the SDK calls it.

// A number is no provider: this line fails to compile if the SDK's types
// are `any` (as with the `.js` subpaths), so the checks below check.
// @ts-expect-error: the SDK's declarations are read.
const _realTypes: OAuthServerProvider = 0;

/** A provider's code methods on `codes`, typed by the SDK. */
function sdkProvider(
  codes: McpAuthorizationCodes,
  subject: string,
): Pick<
  OAuthServerProvider,
  | "skipLocalPkceValidation"
  | "challengeForAuthorizationCode"
  | "authorize"
  | "exchangeAuthorizationCode"
> {
  return {
    skipLocalPkceValidation: codes.skipLocalPkceValidation,
    challengeForAuthorizationCode: codes.challengeForAuthorizationCode,
    async authorize(client, params, res) {
      const code = await codes.issue(client, params, { subject });
      res.redirect(302, `${params.redirectUri}?code=${code}`);
    },
    async exchangeAuthorizationCode(client, code, verifier, uri, resource) {
      const grant = await codes.redeem(client, code, verifier, uri, resource);
      if (grant === null) throw new Error("invalid_grant");
      return { access_token: grant.codeHash, token_type: "bearer" };
    },
  };
}

const CLIENT: OAuthClientInformationFull = {
  client_id: CLIENT_ID,
  redirect_uris: [REDIRECT_URI],
};

/**
 * Authorizes through `provider` as the SDK does; returns the code. The SDK
 * passes absent `state` and `resource` as explicit `undefined`, which its
 * own type does not admit under `exactOptionalPropertyTypes`.
 */
async function sdkAuthorize(
  provider: ReturnType<typeof sdkProvider>,
  params: Omit<AuthorizationParams, "state" | "scopes" | "resource"> & {
    state: string | undefined;
    scopes: string[];
    resource: URL | undefined;
  },
): Promise<string> {
  let location = "";
  const res = { redirect: (_: number, to: string) => void (location = to) };
  await provider.authorize(CLIENT, params as AuthorizationParams, res as never);
  return new URL(location).searchParams.get("code")!;
}

Deno.test('`createMcpAuthorizationCodes` takes the SDK\'s arguments as it passes them: state and resource as explicit undefined, scopes [] or [""]; codes of 256 bits', async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const codes = createMcpAuthorizationCodes(store);
  const provider = sdkProvider(codes, "user-42");
  assertEquals(provider.skipLocalPkceValidation, true);
  const verifier = newVerifier();
  const seen = new Set<string>();
  for (const scopes of [[], [""], ["mcp:tools", "", "read"]]) {
    // As the SDK's authorization handler builds them.
    const code = await sdkAuthorize(provider, {
      state: undefined,
      scopes,
      redirectUri: REDIRECT_URI,
      codeChallenge: s256(verifier),
      resource: undefined,
    });
    assertMatch(code, /^[A-Za-z0-9_-]{43}$/);
    seen.add(code);
    // As the token handler calls the exchange (skipLocalPkceValidation).
    const grant = await codes.redeem(
      CLIENT,
      code,
      verifier,
      undefined,
      undefined,
    );
    assertEquals(grant, {
      clientId: CLIENT_ID,
      subject: "user-42",
      scopes: scopes.filter(Boolean),
      redirectUri: REDIRECT_URI,
      codeHash: hashCode(code),
    });
    const tokens = await provider.exchangeAuthorizationCode(
      CLIENT,
      code,
      verifier,
    ).catch((e: Error) => e.message);
    assertEquals(tokens, "invalid_grant");
  }
  assertEquals(seen.size, 3);
});

Deno.test("`createMcpAuthorizationCodes`: the code lives ttlSeconds; a resource is kept and must match; challengeForAuthorizationCode refuses and spends nothing", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const codes = createMcpAuthorizationCodes(store, { ttlSeconds: 600 });
  const verifier = newVerifier();
  const params = {
    codeChallenge: s256(verifier),
    redirectUri: REDIRECT_URI,
    resource: new URL(RESOURCE),
  };
  const code = await codes.issue(CLIENT, params, { subject: "u" });
  const error = await assertRejects(() =>
    codes.challengeForAuthorizationCode(CLIENT, code)
  );
  assertStringIncludes((error as Error).message, "skipLocalPkceValidation");
  const before = Date.now() / 1000;
  const entry = await store.take(code);
  assert(entry, "the challenge did not spend the code");
  assert(Math.abs(entry.expiresAt - (before + 600)) <= 2, "600 s from now");
  assertEquals(entry.data.resource, [RESOURCE]);

  const again = await codes.issue(CLIENT, params, { subject: "u" });
  const grant = await codes.redeem(
    CLIENT,
    again,
    verifier,
    REDIRECT_URI,
    new URL(RESOURCE),
  );
  assertInstanceOf(grant?.resource, URL);
  assertEquals(grant.resource.href, RESOURCE);

  // A resource the store cannot keep: a clear error, nothing stored.
  const refused = await assertRejects(
    () =>
      codes.issue(CLIENT, { ...params, resource: new URL(`${RESOURCE}#x`) }, {
        subject: "u",
      }),
    InvalidRecordError,
  );
  assertStringIncludes(refused.message, "without a fragment (RFC 8707 §2)");
  assertEquals(await storedCodes(t), 0);
});

Deno.test("`createMcpAuthorizationCodes`: onReplay gets the tombstone for a valid replay only, and its error rejects redeem", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const replays: string[] = [];
  let fail = false;
  const codes = createMcpAuthorizationCodes(store, {
    onReplay(spent) {
      if (fail) throw new Error("revocation failed");
      replays.push(spent.codeHash);
    },
  });
  const verifier = newVerifier();
  const code = await codes.issue(CLIENT, {
    codeChallenge: s256(verifier),
    redirectUri: REDIRECT_URI,
  }, { subject: "u" });
  assert(await codes.redeem(CLIENT, code, verifier));
  const other = { client_id: "other-client" };
  assertEquals(await codes.redeem(other, code, verifier), null);
  assertEquals(await codes.redeem(CLIENT, code, newVerifier()), null);
  assertEquals(await codes.redeem(CLIENT, code, undefined), null);
  assertEquals(
    await codes.redeem(CLIENT, code, verifier, "http://127.0.0.1/x"),
    null,
  );
  assertEquals(replays, []);
  assertEquals(await codes.redeem(CLIENT, code, verifier, REDIRECT_URI), null);
  assertEquals(replays, [hashCode(code)]);
  fail = true;
  await assertRejects(
    () => codes.redeem(CLIENT, code, verifier),
    Error,
    "revocation failed",
  );
  // A code never issued is no replay.
  fail = false;
  assertEquals(await codes.redeem(CLIENT, newVerifier(), verifier), null);
  assertEquals(replays.length, 1);
});

Deno.test("`createMcpAuthorizationCodes` refuses a store that is not one and options of the wrong type or range", () => {
  assertThrows(
    () => createMcpAuthorizationCodes({} as never),
    TypeError,
    "store must be a code store",
  );
  const store = {
    put: () => Promise.resolve(),
    take: () => Promise.resolve(null),
    spent: () => Promise.resolve(null),
    revokeGrant: () => Promise.resolve(0),
  };
  for (const ttlSeconds of [0, 601, 1.5, Number.NaN]) {
    assertThrows(
      () => createMcpAuthorizationCodes(store, { ttlSeconds }),
      RangeError,
      "ttlSeconds",
    );
  }
  assertThrows(
    () => createMcpAuthorizationCodes(store, { ttlSeconds: "60" as never }),
    TypeError,
  );
  assertThrows(
    () => createMcpAuthorizationCodes(store, { onReplay: "revoke" as never }),
    TypeError,
  );
  assertNotEquals(createMcpAuthorizationCodes(store, { ttlSeconds: 1 }), null);
});
