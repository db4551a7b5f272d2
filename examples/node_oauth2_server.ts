/**
 * `@node-oauth/oauth2-server` 5 with its authorization codes in the code
 * store (`createCodeStoreModel`), on node:http, tokens in PostgreSQL. A demo: one
 * public client, and every authorization request is approved for one demo
 * user (a real server authenticates and asks for consent there).
 *
 * ```sh
 * DATABASE_URL=postgres://... deno run -A examples/node_oauth2_server.ts --port 8000
 * ```
 *
 * Environment: `DATABASE_URL` (its `search_path` holds `tokens` and, for
 * `MODE=control`, `control_codes`); `MODE=control` keeps codes the usual
 * way instead (a read, then a delete that reports success, 1 ms of latency
 * per call), to show the race the store closes. With `--port 0` it prints
 * `{"port":n}` once it listens.
 *
 * @module
 */

import process from "node:process";
import OAuth2Server from "@node-oauth/oauth2-server";
import postgres from "postgres";
import { createCodeStore } from "@attesto/code-store";
import { createCodeStoreModel } from "@attesto/code-store/node-oauth2-server";
import { serve } from "./serve.ts";

export const CLIENT_ID = "demo-client";
export const REDIRECT_URI = "http://127.0.0.1/callback";

/** The client the server knows, and the user every request is approved for. */
export interface Accounts {
  /** The client (`getClient`). */
  readonly client: { readonly id: string; readonly [key: string]: unknown };
  /** The user (what `authenticateHandler` returns). */
  readonly user: { readonly [key: string]: unknown };
}

/** The demo's: one public client and one user. */
export const DEMO_ACCOUNTS: Accounts = {
  client: {
    id: CLIENT_ID,
    grants: ["authorization_code"],
    redirectUris: [REDIRECT_URI],
  },
  user: { id: "user-42" },
};

const delay = () => new Promise((resolve) => setTimeout(resolve, 1));

/** The model: the client, tokens in `tokens`, codes per `mode`. */
export function model(
  sql: postgres.Sql,
  mode: "store" | "control",
  accounts: Accounts = DEMO_ACCOUNTS,
) {
  const { client } = accounts;
  // The usual model: a read, then a delete that reports success.
  const control = {
    async saveAuthorizationCode(
      code: Record<string, unknown>,
      c: unknown,
      user: unknown,
    ) {
      await sql`
        insert into control_codes (code, value)
        values (${code.authorizationCode as string}, ${
        sql.json({ ...code, user } as never)
      })
      `;
      return { ...code, client: c, user };
    },
    async getAuthorizationCode(code: string) {
      await delay();
      const [row] = await sql<{ value: Record<string, unknown> }[]>`
        select value from control_codes where code = ${code}
      `;
      if (!row) return false;
      return {
        ...row.value,
        expiresAt: new Date(row.value.expiresAt as string),
        client,
      };
    },
    async revokeAuthorizationCode(code: { authorizationCode: string }) {
      await delay();
      await sql`delete from control_codes where code = ${code.authorizationCode}`;
      return true;
    },
  };
  return {
    getClient: (id: string) =>
      Promise.resolve(id === client.id ? client : false),
    async saveToken(
      token: Record<string, unknown>,
      c: unknown,
      user: unknown,
    ) {
      await sql`
        insert into tokens (code, access_token)
        values (${token.authorizationCode as string}, ${token
        .accessToken as string})
      `;
      return { ...token, client: c, user };
    },
    getAccessToken: () => Promise.resolve(false),
    ...(mode === "store"
      ? createCodeStoreModel(createCodeStore(sql))
      : control),
  };
}

/** A node:http handler for `/authorize` and `/token`. */
export function handler(
  sql: postgres.Sql,
  mode: "store" | "control",
  accounts: Accounts = DEMO_ACCOUNTS,
) {
  const oauth = new OAuth2Server({
    model: model(sql, mode, accounts) as never,
  });
  return async (
    req: import("node:http").IncomingMessage,
    res: import("node:http").ServerResponse,
  ) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    let body = "";
    for await (const chunk of req) body += chunk;
    const request = new OAuth2Server.Request({
      method: req.method ?? "GET",
      headers: req.headers as Record<string, string>,
      query: Object.fromEntries(url.searchParams),
      body: Object.fromEntries(new URLSearchParams(body)),
    });
    const response = new OAuth2Server.Response({});
    try {
      if (url.pathname === "/authorize") {
        await oauth.authorize(request, response, {
          // Demo: every request is approved for the demo user.
          authenticateHandler: { handle: () => accounts.user },
        });
      } else if (url.pathname === "/token") {
        await oauth.token(request, response, {
          requireClientAuthentication: { authorization_code: false },
        });
      } else {
        res.writeHead(404).end();
        return;
      }
    } catch (error) {
      // The library puts its OAuth errors in the response (a redirect with
      // error=..., or a JSON body); anything else is a server error.
      const e = error as { code?: number; name?: string; message?: string };
      const answered = response.headers?.location || response.body?.error;
      if (!answered) {
        res.writeHead(e.code ?? 500, { "content-type": "application/json" });
        res.end(
          JSON.stringify({ error: e.name, error_description: e.message }),
        );
        return;
      }
    }
    res.writeHead(response.status ?? 200, response.headers as never);
    res.end(
      response.body && Object.keys(response.body).length > 0
        ? JSON.stringify(response.body)
        : undefined,
    );
  };
}

if (import.meta.main) {
  const sql = postgres(process.env.DATABASE_URL!, {
    fetch_types: false,
    onnotice: () => {},
  });
  const mode = process.env.MODE === "control" ? "control" : "store";
  serve(handler(sql, mode), () => sql.end({ timeout: 1 }));
}
