/**
 * The oidc-provider flow the tests drive: the test database with the
 * other models' tables, the authorization request through the demo
 * interactions, the token request, and the winning takes of a process.
 *
 * @module
 */

import postgres from "../../tools/postgres.ts";
import { migrate } from "../../mod.ts";
import { migrateOidcModels } from "../../examples/oidc_postgres_adapter.ts";
import { newVerifier, s256 } from "../../examples/pkce.ts";
import { databaseUrl, type TestDatabase, testDatabase } from "./database.ts";
// The demo client of `examples/oidc_provider.ts` is the other examples'.
import {
  CLIENT_ID,
  REDIRECT_URI,
  token as tokenRequest,
} from "./oauth_servers.ts";

/** The test database, with the other models' table in the test's schema. */
export async function oidcDatabase(): Promise<TestDatabase & { url: string }> {
  const t = await testDatabase();
  await t.sql`set search_path to ${t.sql(t.schema)}`;
  const url = new URL(databaseUrl());
  url.searchParams.set("search_path", t.schema);
  const sql = postgres(url.href, {
    max: 1,
    onnotice: () => {},
  });
  try {
    await migrateOidcModels(sql);
    // The code store's default table, in the test's schema.
    await migrate(sql);
  } finally {
    await sql.end({ timeout: 1 });
  }
  return Object.assign(t, { url: url.href });
}

/**
 * A code, as a browser and the demo interactions get it: the authorization
 * request, the login and consent interactions, redirects followed with the
 * provider's cookies, up to the redirect to the client.
 */
export async function authorize(
  base: string,
  { pkce = true } = {},
): Promise<
  { code: string | undefined; verifier: string; params: URLSearchParams }
> {
  const verifier = newVerifier();
  const cookies = new Map<string, string>();
  let url = `${base}/auth?${new URLSearchParams({
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    response_type: "code",
    scope: "openid",
    state: "st4te",
    ...(pkce
      ? { code_challenge: s256(verifier), code_challenge_method: "S256" }
      : {}),
  })}`;
  for (let hops = 0; hops < 10; hops++) {
    const response = await fetch(url, {
      redirect: "manual",
      headers: {
        cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join("; "),
      },
    });
    await response.body?.cancel();
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(";");
      const [name, value] = pair!.split("=");
      cookies.set(name!.trim(), value ?? "");
    }
    const location = response.headers.get("location");
    if (!location) {
      throw new Error(`no redirect from ${url}: ${response.status}`);
    }
    url = new URL(location, base).href;
    if (url.startsWith(REDIRECT_URI)) {
      const params = new URL(url).searchParams;
      return { code: params.get("code") ?? undefined, verifier, params };
    }
  }
  throw new Error("too many redirects");
}

/** `POST /token` for a code, as the demo client with its verifier. */
export function token(base: string, code: string, verifier: string) {
  return tokenRequest(base, { code, verifier });
}

/** How many takes found their code in the process at `base`. */
export async function oidcWins(base: string): Promise<number> {
  return (await (await fetch(`${base}/_wins`)).json()).wins;
}
