/**
 * The reference authorization server (examples/authorization_server.ts),
 * started as a process and driven by openid-client, a widely used OAuth
 * client library (not a hand-written client).
 */

import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import * as client from "openid-client";
import { databaseUrl, testDatabase } from "./support/database.ts";

const SERVER = new URL("../examples/authorization_server.ts", import.meta.url)
  .pathname;

/**
 * Starts the example server on a free port, on a fresh table, and reads
 * what it prints once listening.
 */
async function startServer(table: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER, "--port", "0", "--table", table],
    env: { DATABASE_URL: databaseUrl() },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  // A generous bound: a server that never prints its instructions fails.
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    while (!out.includes("Ctrl-C stops the server.\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`server exited: ${out}`);
      out += value;
    }
  } finally {
    clearTimeout(timer);
  }
  const issuer = out.match(/^listening on (http:\/\/127\.0\.0\.1:\d+)/)?.[1];
  if (!issuer) throw new Error(`unexpected output: ${out}`);
  return {
    issuer,
    /** What it printed. */
    printed: out,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await reader.cancel();
    },
  };
}

/** The client side: discovery, then an authorization request answered by the auto-approving server. */
async function authorize(issuer: string) {
  const config = await client.discovery(
    new URL(issuer),
    "demo-client",
    undefined,
    client.None(),
    { algorithm: "oauth2", execute: [client.allowInsecureRequests] },
  );
  const redirectUri = "http://127.0.0.1:9999/callback";
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: "read profile",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
  });
  const response = await fetch(url, { redirect: "manual" });
  await response.body?.cancel();
  assertEquals(response.status, 302);
  const callback = new URL(response.headers.get("location")!);
  return { config, verifier, state, callback, redirectUri };
}

function grantError(error: unknown): string | undefined {
  return error instanceof client.ResponseBodyError ? error.error : undefined;
}

Deno.test("the metadata follows RFC 8414", async () => {
  await using t = await testDatabase();
  await using server = await startServer(t.table);
  const response = await fetch(
    `${server.issuer}/.well-known/oauth-authorization-server`,
  );
  const metadata = await response.json();
  assertEquals(metadata.issuer, server.issuer);
  assertEquals(metadata.authorization_endpoint, `${server.issuer}/authorize`);
  assertEquals(metadata.token_endpoint, `${server.issuer}/token`);
  assertEquals(metadata.response_types_supported, ["code"]);
  assertEquals(metadata.grant_types_supported, ["authorization_code"]);
  assertEquals(metadata.code_challenge_methods_supported, ["S256"]);
  assertEquals(metadata.token_endpoint_auth_methods_supported, ["none"]);
});

Deno.test("openid-client completes the code + PKCE flow; replaying the code fails with invalid_grant and revokes the token", async () => {
  await using t = await testDatabase();
  await using server = await startServer(t.table);
  const { config, verifier, state, callback } = await authorize(server.issuer);
  assertMatch(callback.searchParams.get("code")!, /^[A-Za-z0-9_-]{43}$/);

  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier,
    expectedState: state,
  });
  assertMatch(tokens.access_token, /^[A-Za-z0-9_-]{43}$/);
  assertEquals(tokens.token_type, "bearer"); // normalised by oauth4webapi
  assertEquals(tokens.expires_in, 3600);
  assertEquals(tokens.scope, "read profile");
  const introspected = await client.tokenIntrospection(
    config,
    tokens.access_token,
  );
  assertEquals(introspected.active, true);
  assertEquals(introspected.sub, "demo-user");

  const replay = await assertRejects(() =>
    client.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: verifier,
      expectedState: state,
    })
  );
  assertEquals(grantError(replay), "invalid_grant");
  // The replay was otherwise valid: the tokens issued from the code are
  // revoked (RFC 6749 §4.1.2).
  assertEquals(
    (await client.tokenIntrospection(config, tokens.access_token)).active,
    false,
  );
});

Deno.test("a wrong code_verifier fails with invalid_grant, spends the code, and a forged replay revokes nothing", async () => {
  await using t = await testDatabase();
  await using server = await startServer(t.table);
  // A legitimate redemption, then a replay with a wrong verifier: not
  // otherwise valid, so it must not revoke the legitimate token.
  const first = await authorize(server.issuer);
  const tokens = await client.authorizationCodeGrant(
    first.config,
    first.callback,
    { pkceCodeVerifier: first.verifier, expectedState: first.state },
  );
  const forged = await assertRejects(() =>
    client.authorizationCodeGrant(first.config, first.callback, {
      pkceCodeVerifier: client.randomPKCECodeVerifier(),
      expectedState: first.state,
    })
  );
  assertEquals(grantError(forged), "invalid_grant");
  assertEquals(
    (await client.tokenIntrospection(first.config, tokens.access_token))
      .active,
    true,
  );

  // A fresh code redeemed with a wrong verifier: refused, and spent.
  const second = await authorize(server.issuer);
  const wrong = await assertRejects(() =>
    client.authorizationCodeGrant(second.config, second.callback, {
      pkceCodeVerifier: client.randomPKCECodeVerifier(),
      expectedState: second.state,
    })
  );
  assertEquals(grantError(wrong), "invalid_grant");
  const after = await assertRejects(() =>
    client.authorizationCodeGrant(second.config, second.callback, {
      pkceCodeVerifier: second.verifier,
      expectedState: second.state,
    })
  );
  assertEquals(grantError(after), "invalid_grant");
});

Deno.test("50 concurrent token requests with one code yield exactly one token", async () => {
  await using t = await testDatabase();
  await using server = await startServer(t.table);
  const { config, verifier, state, callback } = await authorize(server.issuer);
  const results = await Promise.allSettled(
    Array.from(
      { length: 50 },
      () =>
        client.authorizationCodeGrant(config, callback, {
          pkceCodeVerifier: verifier,
          expectedState: state,
        }),
    ),
  );
  const issued = results.filter((r) => r.status === "fulfilled");
  assertEquals(issued.length, 1);
  for (const r of results) {
    if (r.status === "rejected") {
      assertEquals(grantError(r.reason), "invalid_grant");
    }
  }
});

Deno.test("the authorization endpoint validates the request (RFC 6749 §4.1.2.1, RFC 7636)", async () => {
  await using t = await testDatabase();
  await using server = await startServer(t.table);
  const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
  const base = {
    response_type: "code",
    client_id: "demo-client",
    redirect_uri: "http://127.0.0.1:9999/callback",
    code_challenge: challenge,
    code_challenge_method: "S256",
    state: "xyz",
  };
  const get = async (params: Record<string, string | undefined>) => {
    const url = new URL(`${server.issuer}/authorize`);
    for (const [k, v] of Object.entries({ ...base, ...params })) {
      if (v !== undefined) url.searchParams.set(k, v);
    }
    const response = await fetch(url, { redirect: "manual" });
    const body = await response.text();
    const location = response.headers.get("location");
    return {
      status: response.status,
      body,
      location: location ? new URL(location) : null,
    };
  };
  // No redirect to an unverified client or redirect URI.
  for (
    const params of [
      { client_id: "evil" },
      { client_id: undefined },
      { redirect_uri: "https://evil.example/callback" },
      { redirect_uri: "http://127.0.0.1:9999/other" },
      { redirect_uri: undefined },
    ]
  ) {
    const r = await get(params);
    assertEquals(r.status, 400, JSON.stringify(params));
    assertEquals(r.location, null);
    assertStringIncludes(r.body, "invalid_request");
  }
  // Other errors go back to the client, with state and iss.
  for (
    const [params, error] of [
      [{ response_type: "token" }, "unsupported_response_type"],
      [{ response_type: undefined }, "invalid_request"],
      [{ code_challenge: undefined }, "invalid_request"],
      [{ code_challenge_method: "plain" }, "invalid_request"],
      [{ code_challenge_method: undefined }, "invalid_request"],
      [{ code_challenge: "short" }, "invalid_request"],
      [{ state: undefined }, "invalid_request"],
      [{ scope: "admin" }, "invalid_scope"],
    ] as const
  ) {
    const r = await get(params);
    assertEquals(r.status, 302, JSON.stringify(params));
    assertEquals(r.location?.searchParams.get("error"), error);
    assertEquals(r.location?.searchParams.get("iss"), server.issuer);
    assert(!r.location?.searchParams.has("code"));
  }
  // The token endpoint answers errors as JSON, never cached.
  const response = await fetch(`${server.issuer}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: "grant_type=password&client_id=demo-client",
  });
  assertEquals(response.status, 400);
  assertEquals(response.headers.get("cache-control"), "no-store");
  assertEquals((await response.json()).error, "unsupported_grant_type");
});

/** Runs a shell script as printed; its stdout. */
async function sh(script: string): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command("sh", {
    args: ["-c", script],
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  assertEquals(code, 0, decode(stderr));
  return decode(stdout);
}

const curl = await new Deno.Command("curl", { args: ["--version"] }).output()
  .then((r) => r.success, () => false);

Deno.test({
  name:
    "what `deno task example` prints works as printed: the URL to open leads to a page whose curl line gives a token; the shell lines give one, and run again, invalid_grant and the token revoked",
  ignore: !curl,
  async fn() {
    await using t = await testDatabase();
    await using server = await startServer(t.table);
    const { issuer, printed } = server;
    assertStringIncludes(printed, "client_id      demo-client");
    assertStringIncludes(printed, `redirect_uri   ${issuer}/callback`);

    // In a browser: the URL to open, then the page the redirect lands on.
    const open = printed.match(/^ {3}(http:\/\/\S+\/authorize\?\S+)$/m)?.[1];
    assert(open, printed);
    const authorized = await fetch(open, { redirect: "manual" });
    await authorized.body?.cancel();
    assertEquals(authorized.status, 302);
    const page = await (await fetch(authorized.headers.get("location")!))
      .text();
    const redeem = page.split("\n").find((line) => line.startsWith("curl "));
    assert(redeem, page);
    const browser = JSON.parse(await sh(redeem));
    assertMatch(browser.access_token, /^[A-Za-z0-9_-]{43}$/);
    assertEquals(browser.scope, "read profile");

    // In a shell: the two printed lines, then the second one again.
    const lines = printed.split("\n").filter((line) =>
      line.startsWith("   code=$(") || line.startsWith("   curl ")
    ).map((line) => line.trim());
    assertEquals(lines.length, 2, printed);
    const [first, replay] = (await sh([...lines, lines[1]].join("\n")))
      .trim().split("\n").map((line) => JSON.parse(line));
    assertMatch(first.access_token, /^[A-Za-z0-9_-]{43}$/);
    assertEquals(replay.error, "invalid_grant");
    const introspected = await fetch(`${issuer}/introspect`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: first.access_token }),
    });
    assertEquals((await introspected.json()).active, false);
  },
});
