/**
 * An MCP server on the official TypeScript SDK (`@modelcontextprotocol/sdk`
 * 1.x) whose OAuth endpoints are the SDK's `mcpAuthRouter` over a provider
 * with its authorization codes in the code store
 * (`createMcpAuthorizationCodes`), and its access tokens in the same
 * PostgreSQL database, so that several processes can serve it. A demo: two
 * pre-registered public clients, every authorization request approved for
 * one demo user (a real server authenticates and asks for consent there),
 * and one tool, `whoami`, at `POST /mcp` (stateless Streamable HTTP).
 *
 * ```sh
 * DATABASE_URL=postgres://... deno run -A examples/mcp_server.ts --port 8000
 * ```
 *
 * Environment: `DATABASE_URL` (its `search_path` holds the code store's
 * table, migrated, and for `MODE=control`, `control_codes`; the token tables
 * are created on start); `ISSUER`, the server's public URL (the same for
 * every process behind one address; by default its own address, and the
 * MCP resource is `${ISSUER}/mcp`); `MODE=control` keeps codes the way providers
 * usually do instead (the row read for the challenge, then read and deleted
 * in the exchange), to show the race the store closes. With `--port 0` it
 * prints `{"port":n}` once it listens.
 *
 * The SDK's per-address rate limits are off for `/authorize` and `/token`,
 * so that a test's bursts reach the provider: keep a limit in production.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type {
  IncomingMessage,
  RequestListener,
  ServerResponse,
} from "node:http";
import process from "node:process";
import express from "express";
import type {
  AuthorizationParams,
  OAuthServerProvider,
} from "@modelcontextprotocol/sdk/server/auth/provider";
import type { OAuthClientInformationFull } from "@modelcontextprotocol/sdk/shared/auth";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types";
import {
  getOAuthProtectedResourceMetadataUrl,
  mcpAuthRouter,
} from "@modelcontextprotocol/sdk/server/auth/router.js";
import { requireBearerAuth } from "@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js";
import {
  InvalidGrantError,
  InvalidRequestError,
  InvalidTargetError,
  InvalidTokenError,
} from "@modelcontextprotocol/sdk/server/auth/errors.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import postgres from "postgres";
import {
  createCodeStore,
  hashCode,
  InvalidRecordError,
} from "@attesto/code-store";
import {
  createMcpAuthorizationCodes,
  type McpGrant,
} from "@attesto/code-store/mcp";
import { serve } from "./serve.ts";

export const CLIENT_ID = "demo-client";
/** A second public client, to present another client's code. */
export const OTHER_CLIENT_ID = "other-client";
export const REDIRECT_URI = "http://127.0.0.1/callback";
/** The demo user every authorization request is approved for. */
export const SUBJECT = "user-42";
const TOKEN_LIFETIME = 3600;

/**
 * The tokens' tables (idempotent): access tokens by hash, each linked to the
 * hash of the code it came from, and the codes whose tokens are revoked.
 */
export async function migrateMcpTokens(sql: postgres.Sql): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext('mcp_tokens migrate'))`;
    await tx.unsafe(`
      create table if not exists mcp_tokens (
        token_hash text primary key,
        code_hash text not null,
        client_id text not null,
        subject text not null,
        scope text not null,
        resource text,
        expires_at timestamptz not null
      );
      create index if not exists mcp_tokens_code_hash_idx
        on mcp_tokens (code_hash);
      create table if not exists mcp_revoked_codes (
        code_hash text primary key,
        revoked_at timestamptz not null default now()
      );
    `);
  });
}

/** 256 random bits, base64url: an access token, or a control's code. */
const random = () =>
  Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString(
    "base64url",
  );

/**
 * The token set for a redeemed code (an access token: the demo issues no
 * refresh tokens), stored by its hash with the code's hash.
 */
async function mint(sql: postgres.Sql, grant: McpGrant) {
  const accessToken = random();
  const scope = grant.scopes.join(" ");
  const resource = grant.resource?.href ?? null;
  await sql`
    insert into mcp_tokens (token_hash, code_hash, client_id, subject, scope,
      resource, expires_at)
    values (${hashCode(accessToken)}, ${grant.codeHash}, ${grant.clientId},
      ${grant.subject}, ${scope}, ${resource},
      now() + make_interval(secs => ${TOKEN_LIFETIME}))
  `;
  return {
    access_token: accessToken,
    token_type: "bearer",
    expires_in: TOKEN_LIFETIME,
    scope,
  };
}

/**
 * An access token's grant: refused when expired, or when its code was
 * replayed. The revocation is this join, checked at every use, so it holds
 * whatever the order: a replay can be seen (and recorded) before the
 * request that won the code has stored its token.
 */
async function verifyAccessToken(
  sql: postgres.Sql,
  token: string,
): Promise<AuthInfo> {
  const [row] = await sql<
    {
      client_id: string;
      subject: string;
      scope: string;
      resource: string | null;
      exp: number;
    }[]
  >`
    select client_id, subject, scope, resource,
      extract(epoch from expires_at)::int as exp
    from mcp_tokens t
    where token_hash = ${hashCode(token)} and expires_at > now()
      and not exists (
        select 1 from mcp_revoked_codes r where r.code_hash = t.code_hash
      )
  `;
  if (!row) throw new InvalidTokenError("invalid, expired or revoked token");
  return {
    token,
    clientId: row.client_id,
    scopes: row.scope === "" ? [] : row.scope.split(" "),
    expiresAt: row.exp,
    ...(row.resource === null ? {} : { resource: new URL(row.resource) }),
    extra: { subject: row.subject },
  };
}

/** The SDK's `res`, as far as `authorize` uses it. */
interface Redirect {
  redirect(status: number, url: string): void;
}

/** Redirects to the client with the code (and the state, if any). */
function redirectWith(
  res: Redirect,
  params: AuthorizationParams,
  code: string,
): void {
  const to = new URL(params.redirectUri);
  to.searchParams.set("code", code);
  if (params.state !== undefined) to.searchParams.set("state", params.state);
  res.redirect(302, to.href);
}

/** The provider, codes per `mode`. */
export function provider(
  sql: postgres.Sql,
  mode: "store" | "control",
): OAuthServerProvider {
  const clients = new Map<string, OAuthClientInformationFull>(
    [CLIENT_ID, OTHER_CLIENT_ID].map((id) => [id, {
      client_id: id,
      redirect_uris: [REDIRECT_URI],
      token_endpoint_auth_method: "none",
    }]),
  );
  const common = {
    clientsStore: { getClient: (id: string) => clients.get(id) },
    exchangeRefreshToken(): Promise<never> {
      return Promise.reject(new InvalidGrantError("no refresh tokens here"));
    },
    verifyAccessToken: (token: string) => verifyAccessToken(sql, token),
  };
  if (mode === "control") return { ...common, ...controlCodes(sql) };

  const codes = createMcpAuthorizationCodes(createCodeStore(sql), {
    // A valid replay: the code leaked, or was used twice. Recorded, so that
    // the tokens minted from it are refused even if stored after this.
    async onReplay(spent) {
      await sql`
        insert into mcp_revoked_codes (code_hash) values (${spent.codeHash})
        on conflict do nothing
      `;
    },
  });
  return {
    ...common,
    skipLocalPkceValidation: codes.skipLocalPkceValidation,
    challengeForAuthorizationCode: codes.challengeForAuthorizationCode,
    async authorize(client, params, res) {
      let code;
      try {
        code = await codes.issue(client, params, { subject: SUBJECT });
      } catch (error) {
        // What the store cannot keep, refused before anything is stored: a
        // resource with a fragment (RFC 8707 §2), or a malformed challenge
        // or scope (the SDK checks neither).
        if (error instanceof InvalidRecordError) {
          throw error.field === "params.resource"
            ? new InvalidTargetError(error.message)
            : new InvalidRequestError(error.message);
        }
        throw error;
      }
      redirectWith(res, params, code);
    },
    async exchangeAuthorizationCode(client, code, verifier, uri, resource) {
      const grant = await codes.redeem(client, code, verifier, uri, resource);
      if (grant === null) {
        throw new InvalidGrantError("invalid, spent or expired code");
      }
      return await mint(sql, grant);
    },
  };
}

/** The usual way: the row read for the challenge, then read and deleted. */
function controlCodes(sql: postgres.Sql) {
  interface Row {
    clientId: string;
    codeChallenge: string;
    redirectUri: string;
    scopes: string[];
    resource: string | null;
  }
  const find = async (code: string) => {
    const [row] = await sql<{ value: Row }[]>`
      select value from control_codes where code = ${code}
    `;
    if (!row) throw new InvalidGrantError("invalid authorization code");
    return row.value;
  };
  return {
    async authorize(
      client: OAuthClientInformationFull,
      params: AuthorizationParams,
      res: Redirect,
    ) {
      const code = random();
      const value: Row = {
        clientId: client.client_id,
        codeChallenge: params.codeChallenge,
        redirectUri: params.redirectUri,
        scopes: params.scopes ?? [],
        resource: params.resource?.href ?? null,
      };
      await sql`
        insert into control_codes (code, value)
        values (${code}, ${sql.json(value as never)})
      `;
      redirectWith(res, params, code);
    },
    async challengeForAuthorizationCode(
      _client: OAuthClientInformationFull,
      code: string,
    ) {
      return (await find(code)).codeChallenge;
    },
    async exchangeAuthorizationCode(
      client: OAuthClientInformationFull,
      code: string,
    ) {
      const row = await find(code);
      if (row.clientId !== client.client_id) {
        throw new InvalidGrantError("issued to another client");
      }
      await sql`delete from control_codes where code = ${code}`;
      return await mint(sql, {
        clientId: row.clientId,
        subject: SUBJECT,
        scopes: row.scopes,
        redirectUri: row.redirectUri,
        ...(row.resource === null ? {} : { resource: new URL(row.resource) }),
        codeHash: hashCode(code),
      });
    },
  };
}

/** The MCP server of one request: the `whoami` tool. */
function mcpServer(): McpServer {
  const server = new McpServer({ name: "code-store-demo", version: "1.0.0" });
  server.registerTool(
    "whoami",
    { description: "The user and client the access token was issued for" },
    ({ authInfo }: { authInfo?: AuthInfo }) => ({
      content: [{
        type: "text",
        text: JSON.stringify({
          subject: authInfo?.extra?.subject,
          clientId: authInfo?.clientId,
        }),
      }],
    }),
  );
  return server;
}

/** The Express app for `issuer`: the SDK's OAuth endpoints and `/mcp`. */
export function app(
  sql: postgres.Sql,
  mode: "store" | "control",
  issuer: URL,
): RequestListener {
  const oauth = provider(sql, mode);
  const resource = new URL("/mcp", issuer);
  const app = express();
  app.use(mcpAuthRouter({
    provider: oauth,
    issuerUrl: issuer,
    resourceServerUrl: resource,
    scopesSupported: ["mcp:tools"],
    authorizationOptions: { rateLimit: false },
    tokenOptions: { rateLimit: false },
  }));
  app.post(
    "/mcp",
    requireBearerAuth({
      verifier: oauth,
      expectedResource: resource,
      resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(resource),
    }),
    express.json(),
    async (req: IncomingMessage & { body?: unknown }, res: ServerResponse) => {
      const server = mcpServer();
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: undefined,
        enableJsonResponse: true,
      });
      res.on("close", () => {
        transport.close();
        server.close();
      });
      await server.connect(transport);
      await transport.handleRequest(req, res, req.body);
    },
  );
  return app;
}

if (import.meta.main) {
  const sql = postgres(process.env.DATABASE_URL!, {
    fetch_types: false,
    onnotice: () => {},
  });
  const mode = process.env.MODE === "control" ? "control" : "store";
  await migrateMcpTokens(sql);
  // The issuer: ISSUER, or this server's address, known once it listens.
  let handler: RequestListener | undefined;
  const server = serve(
    (req, res) => handler!(req, res),
    () => sql.end({ timeout: 1 }),
  );
  server.once("listening", () => {
    const { port } = server.address() as { port: number };
    const issuer = process.env.ISSUER ?? `http://127.0.0.1:${port}`;
    handler = app(sql, mode, new URL(issuer));
  });
}
