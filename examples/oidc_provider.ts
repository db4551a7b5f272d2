/**
 * panva's oidc-provider on `@attesto/code-store`: the OpenID provider most
 * JavaScript authorization servers are built on, with its authorization
 * codes redeemed exactly once, across every process sharing the database.
 *
 * ```sh
 * deno run -A examples/oidc_provider.ts --port 3000   # embedded PostgreSQL
 * ```
 *
 * One public client, `demo-client` (loopback redirect URIs, PKCE S256
 * required), and a demo user signed in and consenting at once through the
 * provider's interaction routes (`/interaction/:uid`): replace them with
 * your login and consent pages. Every other model (sessions, grants,
 * tokens) lives in PostgreSQL too (`oidc_postgres_adapter.ts`), so several
 * processes can serve the same provider.
 *
 * @module
 */

import {
  createServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import { parseArgs } from "node:util";
// @ts-types="npm:@types/oidc-provider@9.12.1"
import Provider, { type Configuration } from "oidc-provider";
import type postgres from "postgres";
import type { CodeStore } from "@attesto/code-store";
import { createOidcProviderAdapter } from "@attesto/code-store/oidc-provider";
import { migrateOidcModels, postgresAdapter } from "./oidc_postgres_adapter.ts";

/** The demo client. */
export const CLIENT_ID = "demo-client";
/** The demo user. */
export const ACCOUNT = "demo-user";

/** Options for {@linkcode oidcProvider}. */
export interface OidcProviderOptions {
  /** The issuer URL. */
  readonly issuer: string;
  /** The pool the other models live in. */
  readonly sql: postgres.Sql;
  /** The code store; without it, codes use the plain PostgreSQL adapter. */
  readonly store?: CodeStore | undefined;
  /**
   * Every model in oidc-provider's in-memory adapter instead (one process
   * only): the tests' measure of oidc-provider's default.
   */
  readonly memory?: boolean;
  /** Require PKCE (default true; the store refuses codes without it). */
  readonly pkceRequired?: boolean;
  /** Revoke the grant when a code is replayed (oidc-provider's default: yes). */
  readonly revokeGrantOnReplay?: boolean;
  /** The demo client's redirect URIs (default `http://127.0.0.1/callback`). */
  readonly redirectUris?: readonly string[];
}

/**
 * The provider, and a Node request handler serving it with the demo
 * interactions.
 */
export function oidcProvider(options: OidcProviderOptions): {
  provider: Provider;
  handler: (req: IncomingMessage, res: ServerResponse) => void;
} {
  const others = postgresAdapter(options.sql);
  const configuration: Configuration = {
    ...(options.memory ? {} : {
      adapter: options.store
        ? createOidcProviderAdapter(options.store, { fallback: others })
        : others,
    }),
    clients: [{
      client_id: CLIENT_ID,
      application_type: "native",
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code"],
      response_types: ["code"],
      redirect_uris: [
        ...(options.redirectUris ?? ["http://127.0.0.1/callback"]),
      ],
    }],
    pkce: { required: () => options.pkceRequired ?? true },
    ...(options.revokeGrantOnReplay === false
      ? { revokeGrantPolicy: () => false }
      : {}),
    cookies: { keys: ["attesto example cookie key, replace it"] },
    findAccount: (_ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id }),
    }),
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    features: { devInteractions: { enabled: false } },
  };
  const provider = new Provider(options.issuer, configuration);
  const callback = provider.callback();

  /** Signs the demo user in, then grants what the client asked for. */
  async function interaction(req: IncomingMessage, res: ServerResponse) {
    const details = await provider.interactionDetails(req, res);
    const { prompt, params, session } = details;
    let result;
    if (prompt.name === "login") {
      result = { login: { accountId: ACCOUNT } };
    } else {
      const grant = details.grantId
        ? (await provider.Grant.find(details.grantId))!
        : new provider.Grant({
          accountId: session!.accountId,
          clientId: params.client_id as string,
        });
      const missing = prompt.details as {
        missingOIDCScope?: string[];
        missingOIDCClaims?: string[];
      };
      if (missing.missingOIDCScope) {
        grant.addOIDCScope(missing.missingOIDCScope.join(" "));
      }
      if (missing.missingOIDCClaims) {
        grant.addOIDCClaims(missing.missingOIDCClaims);
      }
      result = { consent: { grantId: await grant.save() } };
    }
    await provider.interactionFinished(req, res, result, {
      mergeWithLastSubmission: false,
    });
  }

  return {
    provider,
    handler(req, res) {
      if (req.url?.startsWith("/interaction/")) {
        interaction(req, res).catch((error) => {
          res.statusCode = 500;
          res.end(String(error));
        });
      } else {
        callback(req, res);
      }
    },
  };
}

/** Creates the tables of the code store and of the other models. */
export { migrateOidcModels };

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { port: { type: "string", default: "3000" } },
  });
  const { createCodeStore, migrate } = await import("@attesto/code-store");
  // A development tool: loaded only when run.
  const { exampleDatabase, portFlag } = await import(
    "../tools/example_database.ts"
  );
  const port = portFlag(values.port);
  const database = await exampleDatabase();
  const { sql } = database;
  await migrate(sql);
  await migrateOidcModels(sql);
  const issuer = `http://127.0.0.1:${port}`;
  const { handler } = oidcProvider({
    issuer,
    sql,
    store: createCodeStore(sql),
  });
  const server = createServer(handler).listen(port, "127.0.0.1", () => {
    console.log(`oidc-provider on ${issuer}`);
  });
  database.stopOnSignal(async () => {
    server.close();
    await database.close();
    Deno.exit(0);
  });
}
