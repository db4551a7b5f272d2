/**
 * A reference OAuth 2.0 authorization server on `@attesto/code-store`: the
 * authorization code grant with PKCE (S256 only), for one pre-registered
 * public client, `demo-client`, and one auto-approved demo user.
 *
 * ```sh
 * deno run -A examples/authorization_server.ts --port 8000   # deno task example
 * ```
 *
 * It runs on an embedded PostgreSQL unless `DATABASE_URL` is set, and
 * migrates on start. Once listening it prints what to do next: the client
 * id, the redirect URI, an `/authorize` URL with a fresh PKCE challenge and
 * state, and the token request with the matching `code_verifier`, as `curl`
 * lines that run as printed. Endpoints:
 *
 * - `GET /.well-known/oauth-authorization-server` (RFC 8414)
 * - `GET /authorize` (RFC 6749 §4.1.1, RFC 7636 §4.3)
 * - `POST /token` (RFC 6749 §4.1.3, §5; RFC 7636 §4.5)
 * - `POST /introspect` (RFC 7662), unauthenticated: a demo, so that a client
 *   can see its token revoked after a replay
 * - `GET /callback`, only when run as a program: a stand-in for the client's
 *   redirect endpoint, which shows the code and the token request to make
 *
 * Access tokens live in this process's memory; codes live in the store.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CodeStore, createCodeStore, migrate } from "../mod.ts";
import { isS256Challenge, newVerifier, pkceMatches, s256 } from "./pkce.ts";

/** The one registered client: public, loopback redirect URIs (RFC 8252). */
export const CLIENT_ID = "demo-client";
/** The auto-approved user. */
export const SUBJECT = "demo-user";
const SCOPES = new Set(["read", "write", "profile", "email"]);
const DEFAULT_SCOPE = ["read"];
const TOKEN_LIFETIME = 3600;

interface AccessToken {
  readonly clientId: string;
  readonly subject: string;
  readonly scope: string;
  readonly grantId: string;
  readonly expiresAt: number;
}

/** Options for {@linkcode authorizationServer}. */
export interface ServerOptions {
  /** Where codes are kept. */
  readonly store: CodeStore;
  /**
   * The issuer (RFC 8414 §2): its URL, such as `http://127.0.0.1:8000`, for
   * a request.
   */
  readonly issuer: (request: Request) => string;
  /** Code lifetime in seconds (default 60). */
  readonly codeLifetime?: number;
}

/**
 * The server's request handler.
 *
 * @param options The code store, the issuer and the code lifetime.
 * @returns A `Deno.serve` handler.
 */
export function authorizationServer(
  options: ServerOptions,
): (request: Request) => Promise<Response> {
  const { store, issuer } = options;
  const codeLifetime = options.codeLifetime ?? 60;
  const tokens = new Map<string, AccessToken>();
  // Grants revoked by a replay, checked whenever a token is used: a replay
  // can be seen before the request that won the code has stored its token.
  const revokedGrants = new Set<string>();

  const metadata = (iss: string) => ({
    issuer: iss,
    authorization_endpoint: `${iss}/authorize`,
    token_endpoint: `${iss}/token`,
    introspection_endpoint: `${iss}/introspect`,
    response_types_supported: ["code"],
    grant_types_supported: ["authorization_code"],
    code_challenge_methods_supported: ["S256"],
    token_endpoint_auth_methods_supported: ["none"],
    introspection_endpoint_auth_methods_supported: ["none"],
    scopes_supported: [...SCOPES],
    // RFC 9207: the authorization response carries `iss`.
    authorization_response_iss_parameter_supported: true,
  });

  /** RFC 6749 §4.1.1 / §4.1.2. */
  async function authorize(url: URL, iss: string): Promise<Response> {
    const params = url.searchParams;
    const clientId = params.get("client_id");
    const redirectUri = params.get("redirect_uri");
    // §4.1.2.1: with an unknown client or a bad redirect URI, tell the user,
    // never redirect.
    if (clientId !== CLIENT_ID) {
      return text(400, "invalid_request: unknown client_id");
    }
    if (!redirectUri || !isLoopbackCallback(redirectUri)) {
      return text(
        400,
        "invalid_request: redirect_uri must be http://127.0.0.1:<port>/callback",
      );
    }
    const state = params.get("state");
    const fail = (error: string, description: string) =>
      redirect(redirectUri, {
        error,
        error_description: description,
        ...(state === null ? {} : { state }),
        iss,
      });
    for (const [name, value] of params) {
      if (params.getAll(name).length > 1) {
        return fail("invalid_request", `${name} is repeated`);
      }
      if (value === "" && name !== "scope") {
        return fail("invalid_request", `${name} is empty`);
      }
    }
    const responseType = params.get("response_type");
    if (responseType === null) {
      return fail("invalid_request", "response_type is required");
    }
    if (responseType !== "code") {
      return fail("unsupported_response_type", "only code is supported");
    }
    if (state === null) {
      return fail("invalid_request", "state is required");
    }
    const challenge = params.get("code_challenge");
    const method = params.get("code_challenge_method");
    if (challenge === null) {
      return fail("invalid_request", "PKCE is required: code_challenge");
    }
    if (method !== "S256") {
      // RFC 7636 §4.4.1: an unsupported transformation is invalid_request.
      return fail("invalid_request", "code_challenge_method must be S256");
    }
    if (!isS256Challenge(challenge)) {
      return fail(
        "invalid_request",
        "code_challenge must be S256 (43 characters)",
      );
    }
    const scope = (params.get("scope") ?? "").split(" ").filter(Boolean);
    if (scope.some((s) => !SCOPES.has(s))) {
      return fail("invalid_scope", `supported: ${[...SCOPES].join(" ")}`);
    }
    // The demo user approves at once. A fresh code of 256 random bits.
    const code = randomToken();
    await store.put({
      code,
      expiresAt: Math.floor(Date.now() / 1000) + codeLifetime,
      data: {
        clientId,
        subject: SUBJECT,
        redirectUri,
        scope: scope.length > 0 ? scope : DEFAULT_SCOPE,
        codeChallenge: challenge,
        codeChallengeMethod: "S256",
        grantId: crypto.randomUUID(),
      },
    });
    return redirect(redirectUri, { code, state, iss });
  }

  /** RFC 6749 §4.1.3, §5.1, §5.2; RFC 7636 §4.6. */
  async function token(request: Request): Promise<Response> {
    if (
      !request.headers.get("content-type")?.startsWith(
        "application/x-www-form-urlencoded",
      )
    ) {
      return tokenError(400, "invalid_request", "expected a form body");
    }
    const form = new URLSearchParams(await request.text());
    for (const name of new Set(form.keys())) {
      if (form.getAll(name).length > 1) {
        return tokenError(400, "invalid_request", `${name} is repeated`);
      }
    }
    const grantType = form.get("grant_type");
    if (grantType === null) {
      return tokenError(400, "invalid_request", "grant_type is required");
    }
    if (grantType !== "authorization_code") {
      return tokenError(
        400,
        "unsupported_grant_type",
        "authorization_code only",
      );
    }
    const clientId = form.get("client_id");
    if (clientId !== CLIENT_ID) {
      return tokenError(401, "invalid_client", "unknown client");
    }
    const code = form.get("code");
    const redirectUri = form.get("redirect_uri");
    const verifier = form.get("code_verifier");
    if (!code || !redirectUri || !verifier) {
      return tokenError(
        400,
        "invalid_request",
        "code, redirect_uri and code_verifier are required",
      );
    }

    // Take first: from here on the code is spent, whatever follows.
    const entry = await store.take(code);
    if (entry === null) {
      // Unknown, expired and swept, or used before. A replay that is
      // otherwise valid (same client, redirect URI and PKCE verifier) means
      // the code leaked: revoke what it produced (RFC 6749 §4.1.2).
      const tombstone = await store.spent(code);
      if (
        tombstone && tombstone.clientId === clientId &&
        tombstone.redirectUri === redirectUri &&
        pkceMatches(verifier, tombstone.codeChallenge)
      ) {
        if (tombstone.grantId !== null) revokedGrants.add(tombstone.grantId);
      }
      return tokenError(400, "invalid_grant", "invalid authorization code");
    }
    const { data } = entry;
    if (
      entry.expiresAt <= Date.now() / 1000 || data.clientId !== clientId ||
      data.redirectUri !== redirectUri ||
      !pkceMatches(verifier, data.codeChallenge)
    ) {
      return tokenError(400, "invalid_grant", "invalid authorization code");
    }
    const accessToken = randomToken();
    const scope = data.scope.join(" ");
    tokens.set(accessToken, {
      clientId,
      subject: data.subject,
      scope,
      grantId: data.grantId ?? crypto.randomUUID(),
      expiresAt: Math.floor(Date.now() / 1000) + TOKEN_LIFETIME,
    });
    return json(200, {
      access_token: accessToken,
      token_type: "Bearer",
      expires_in: TOKEN_LIFETIME,
      scope,
    });
  }

  /** RFC 7662, for the demo. */
  async function introspect(
    request: Request,
    iss: string,
  ): Promise<Response> {
    const form = new URLSearchParams(await request.text());
    const found = tokens.get(form.get("token") ?? "");
    const active = found !== undefined && !revokedGrants.has(found.grantId) &&
      found.expiresAt > Date.now() / 1000;
    return json(
      200,
      active
        ? {
          active,
          client_id: found.clientId,
          sub: found.subject,
          scope: found.scope,
          exp: found.expiresAt,
          token_type: "Bearer",
          iss,
        }
        : { active: false },
    );
  }

  return async (request) => {
    const url = new URL(request.url);
    const route = `${request.method} ${url.pathname}`;
    try {
      switch (route) {
        case "GET /.well-known/oauth-authorization-server":
          return json(200, metadata(issuer(request)), "public, max-age=60");
        case "GET /authorize":
          return await authorize(url, issuer(request));
        case "POST /token":
          return await token(request);
        case "POST /introspect":
          return await introspect(request, issuer(request));
        default:
          return text(404, "not found");
      }
    } catch (error) {
      // A database error: the code may or may not be spent; never a token.
      console.error(`${route}: ${(error as Error).message}`);
      return route === "POST /token"
        ? tokenError(500, "server_error", "try again")
        : text(500, "server_error");
    }
  };
}

/** RFC 8252 §7.3: loopback redirect URIs, any port. */
function isLoopbackCallback(uri: string): boolean {
  try {
    const url = new URL(uri);
    return url.protocol === "http:" && url.hostname === "127.0.0.1" &&
      url.pathname === "/callback" && url.hash === "" && url.username === "" &&
      url.password === "";
  } catch {
    return false;
  }
}

function randomToken(): string {
  return crypto.getRandomValues(new Uint8Array(32)).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
}

function redirect(to: string, params: Record<string, string>): Response {
  const url = new URL(to);
  for (const [name, value] of Object.entries(params)) {
    url.searchParams.set(name, value);
  }
  return new Response(null, {
    status: 302,
    headers: { location: url.href, "cache-control": "no-store" },
  });
}

function json(status: number, body: unknown, cache = "no-store"): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: {
      "content-type": "application/json",
      "cache-control": cache,
      ...(cache === "no-store" ? { pragma: "no-cache" } : {}),
    },
  });
}

function tokenError(status: number, error: string, description: string) {
  return json(status, { error, error_description: description });
}

function text(status: number, body: string): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain", "cache-control": "no-store" },
  });
}

/** What the program prints and serves to start a flow by hand. */
interface Walkthrough {
  /** The instructions printed once the server listens. */
  readonly instructions: string;
  /** The redirect endpoint's page for `GET /callback`. */
  readonly callback: (url: URL) => Response;
}

/**
 * The walkthrough for a server at `issuer`: one PKCE verifier and state,
 * the `/authorize` URL that carries them, and the token request that
 * redeems the code it gives.
 */
function walkthrough(issuer: string, codeLifetime: number): Walkthrough {
  const verifier = newVerifier();
  const state = randomToken().slice(0, 16);
  const redirectUri = `${issuer}/callback`;
  const authorizeUrl = new URL(`${issuer}/authorize`);
  for (
    const [name, value] of Object.entries({
      response_type: "code",
      client_id: CLIENT_ID,
      redirect_uri: redirectUri,
      scope: "read profile",
      state,
      code_challenge: s256(verifier),
      code_challenge_method: "S256",
    })
  ) {
    authorizeUrl.searchParams.set(name, value);
  }
  const tokenRequest = (code: string, verifierValue = verifier) =>
    `curl -s ${issuer}/token -d grant_type=authorization_code ` +
    `-d client_id=${CLIENT_ID} -d redirect_uri=${redirectUri} ` +
    `-d code_verifier=${verifierValue} -d ${code}; echo`;
  const instructions = [
    `client_id      ${CLIENT_ID} (a public client: no secret, PKCE S256)`,
    `redirect_uri   ${redirectUri} (served here, for the demo)`,
    `code_verifier  ${verifier}`,
    "",
    "1. Open this URL in a browser. The demo user approves at once; the",
    "   redirect lands on a page with the token request to run:",
    "",
    `   ${authorizeUrl.href}`,
    "",
    `2. Or in a shell: get a code, then redeem it (once, within ${codeLifetime} s):`,
    "",
    `   code=$(curl -s -o /dev/null -w '%{redirect_url}' '${authorizeUrl.href}' | sed -n 's/.*[?&]code=\\([^&]*\\).*/\\1/p')`,
    `   ${tokenRequest('"code=$code"')}`,
    "",
    "   Run the second line again: invalid_grant, the code is spent; and the",
    "   token it gave is revoked (POST /introspect with token=<access_token>",
    "   answers active: false).",
  ].join("\n");
  const callback = (url: URL) => {
    const params = url.searchParams;
    const code = params.get("code");
    if (code === null) {
      return text(
        400,
        `The authorization server answered ${params.get("error")}: ` +
          `${params.get("error_description")}\n`,
      );
    }
    const ours = params.get("state") === state;
    return text(
      200,
      [
        "The authorization server redirected here with a code (this page",
        "stands in for the client's redirect endpoint).",
        "",
        `code   ${code}`,
        `state  ${params.get("state")}${
          ours ? " (the one printed: this request is yours)" : ""
        }`,
        "",
        `Redeem it (once, within ${codeLifetime} s):`,
        "",
        tokenRequest(
          `code=${code}`,
          ours ? verifier : "<your code_verifier>",
        ),
        "",
      ].join("\n"),
    );
  };
  return { instructions, callback };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string", default: "8000" },
      table: { type: "string" },
    },
  });
  // A development tool: loaded only when run, never by a host importing
  // the handler (such as examples/deploy.ts).
  const { exampleDatabase, portFlag } = await import(
    "../tools/example_database.ts"
  );
  const port = portFlag(values.port);
  if (port !== 0) {
    // Before starting a database: a port in use is one line, not a trace.
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) throw error;
      console.error(
        `port ${port} is in use: add --port <another>, or --port 0 for any ` +
          `free one (deno task example --port 0)`,
      );
      Deno.exit(1);
    }
  }
  const database = await exampleDatabase();
  const { sql } = database;
  await migrate(sql, { table: values.table });
  const codeLifetime = 60;
  let issuer = "";
  let guide: Walkthrough | undefined;
  const handler = authorizationServer({
    store: createCodeStore(sql, { table: values.table }),
    issuer: () => issuer,
    codeLifetime,
  });
  const server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port,
      onListen: (address) => {
        issuer = `http://127.0.0.1:${address.port}`;
        guide = walkthrough(issuer, codeLifetime);
        const where = Deno.env.get("DATABASE_URL")
          ? "DATABASE_URL's database"
          : "an embedded PostgreSQL, removed on exit";
        console.log(`listening on ${issuer} (codes in ${where})\n`);
        console.log(guide.instructions);
        console.log("\nCtrl-C stops the server.");
      },
    },
    (request) => {
      const url = new URL(request.url);
      return request.method === "GET" && url.pathname === "/callback" && guide
        ? guide.callback(url)
        : handler(request);
    },
  );
  database.stopOnSignal(async () => {
    await server.shutdown();
    await database.close();
    Deno.exit(0);
  });
  await server.finished;
}
