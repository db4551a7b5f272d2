/**
 * `@jmondi/oauth2-server` 4 (ts-oauth2-server) with its authorization codes
 * in the code store (`createAuthCodeRepository`), on its Fetch adapter
 * (`/vanilla`), tokens in PostgreSQL. A demo: two public clients, and every
 * authorization request is approved for one demo user (a real server
 * authenticates and asks for consent there). The same repository serves JWT
 * and opaque codes, with no option.
 *
 * ```sh
 * DATABASE_URL=postgres://... deno run -A examples/ts_oauth2_server.ts --port 8000
 * ```
 *
 * Environment: `DATABASE_URL` (its `search_path` holds `tokens` and, for
 * `MODE=control`, `control_codes`); `CODES=opaque` for
 * `useOpaqueAuthorizationCodes`; `PKCE=optional` to let a request without
 * PKCE through to the repository; `MODE=control` keeps codes as the
 * library's example does (a read for `isRevoked`, `revoke` after the tokens,
 * 1 ms of latency per call), to show the race the store closes. With
 * `--port 0` it prints `{"port":n}` once it listens.
 *
 * @module
 */

import process from "node:process";
import {
  AuthorizationServer,
  type OAuthAuthCode,
  type OAuthAuthCodeRepository,
  type OAuthClient,
  type OAuthToken,
  type OAuthUser,
  type OAuthUserIdentifier,
} from "@jmondi/oauth2-server";
import {
  handleVanillaError,
  requestFromVanilla,
  responseToVanilla,
} from "@jmondi/oauth2-server/vanilla";
import postgres from "postgres";
import { createCodeStore } from "@attesto/code-store";
import { createAuthCodeRepository } from "@attesto/code-store/ts-oauth2-server";
import { fetchListener, serve } from "./serve.ts";

export const CLIENT_ID = "demo-client";
/** A second public client, which no code of the demo client's redeems for. */
export const OTHER_CLIENT_ID = "other-client";
export const REDIRECT_URI = "http://127.0.0.1/callback";

/** The clients and users the server knows. */
export interface Accounts {
  /** The clients, by their `id`. */
  readonly clients: readonly OAuthClient[];
  /** The user of an identifier. */
  readonly user: (id: OAuthUserIdentifier) => OAuthUser;
}

/** The demo's: two public clients, and any user is just its id. */
export const DEMO_ACCOUNTS: Accounts = {
  clients: [CLIENT_ID, OTHER_CLIENT_ID].map((id) => ({
    id,
    name: id,
    secret: null,
    redirectUris: [REDIRECT_URI],
    allowedGrants: ["authorization_code"],
    scopes: [],
  })),
  user: (id) => ({ id }),
};

const delay = () => new Promise((resolve) => setTimeout(resolve, 1));
const random = () =>
  Array.from(
    crypto.getRandomValues(new Uint8Array(24)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");

/** The library's example repository, over a shared table. */
function controlRepository(sql: postgres.Sql): OAuthAuthCodeRepository {
  return {
    async getByIdentifier(code) {
      await delay();
      const [row] = await sql<{ value: OAuthAuthCode }[]>`
        select value from control_codes where code = ${code}
      `;
      if (!row) throw new Error("not found");
      return { ...row.value, expiresAt: new Date(row.value.expiresAt) };
    },
    issueAuthCode: (client, user, scopes) => ({
      code: random(),
      user: user ?? null,
      client,
      scopes,
      expiresAt: new Date(),
    }),
    async persist(authCode) {
      await sql`
        insert into control_codes (code, value)
        values (${authCode.code}, ${sql.json(authCode as never)})
      `;
    },
    async isRevoked(code) {
      await delay();
      const [row] = await sql<{ revoked: boolean }[]>`
        select (value->>'revoked')::boolean is true as revoked
        from control_codes where code = ${code}
      `;
      return !row || row.revoked;
    },
    async revoke(code) {
      await delay();
      await sql`
        update control_codes set value = value || '{"revoked": true}'
        where code = ${code}
      `;
    },
  };
}

/** The authorization server, per the environment. */
export function authorizationServer(
  sql: postgres.Sql,
  env: { mode: string; codes: string; pkce: string },
  accounts: Accounts = DEMO_ACCOUNTS,
): AuthorizationServer {
  const opaque = env.codes === "opaque";
  const server = new AuthorizationServer(
    {
      getByIdentifier: (id) => {
        const client = accounts.clients.find((c) => c.id === id);
        return client
          ? Promise.resolve(client)
          : Promise.reject(new Error("unknown client"));
      },
      isClientValid: (grant, c) =>
        Promise.resolve(c.allowedGrants.includes(grant)),
    },
    {
      issueToken: (c, scopes, user) =>
        Promise.resolve({
          accessToken: random(),
          accessTokenExpiresAt: new Date(Date.now() + 3_600_000),
          refreshToken: null,
          refreshTokenExpiresAt: null,
          client: c,
          user: user ?? null,
          scopes,
        }),
      issueRefreshToken: (token: OAuthToken) => Promise.resolve(token),
      async persist(token) {
        await sql`
          insert into tokens (code, access_token)
          values (${token.originatingAuthCodeId ?? null}, ${token.accessToken})
        `;
      },
      revoke: () => Promise.resolve(),
      isRefreshTokenRevoked: () => Promise.resolve(true),
      getByRefreshToken: () => Promise.reject(new Error("no refresh tokens")),
    },
    {
      getAllByIdentifiers: (names) =>
        Promise.resolve(names.map((name) => ({ name }))),
      finalize: (scopes) => Promise.resolve(scopes),
    },
    "demo-secret-of-at-least-32-characters!",
    {
      requiresPKCE: env.pkce !== "optional",
      requiresS256: env.pkce !== "optional",
      useOpaqueAuthorizationCodes: opaque,
    },
  );
  server.enableGrantType({
    grant: "authorization_code",
    userRepository: {
      getUserByCredentials: (id) => Promise.resolve(accounts.user(id)),
    },
    authCodeRepository: env.mode === "control"
      ? controlRepository(sql)
      : createAuthCodeRepository(createCodeStore(sql)),
  });
  return server;
}

/** A Fetch handler for `/authorize` and `/token`. */
export function handler(server: AuthorizationServer) {
  return async (request: Request): Promise<Response> => {
    const { pathname } = new URL(request.url);
    try {
      if (pathname === "/authorize") {
        const authorization = await server.validateAuthorizationRequest(
          await requestFromVanilla(request),
        );
        // Demo: every request is approved for the demo user.
        authorization.user = { id: "user-42" };
        authorization.isAuthorizationApproved = true;
        return responseToVanilla(
          await server.completeAuthorizationRequest(authorization),
        );
      }
      if (pathname === "/token" && request.method === "POST") {
        return responseToVanilla(
          await server.respondToAccessTokenRequest(
            await requestFromVanilla(request),
          ),
        );
      }
      return new Response(null, { status: 404 });
    } catch (error) {
      return responseToVanilla(handleVanillaError(error));
    }
  };
}

if (import.meta.main) {
  const sql = postgres(process.env.DATABASE_URL!, {
    fetch_types: false,
    onnotice: () => {},
  });
  const server = authorizationServer(sql, {
    mode: process.env.MODE ?? "store",
    codes: process.env.CODES ?? "jwt",
    pkce: process.env.PKCE ?? "required",
  });
  serve(fetchListener(handler(server)), () => sql.end({ timeout: 1 }));
}
