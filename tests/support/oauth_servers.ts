/**
 * What the authorization-server tests share: the test database with a
 * `tokens` table the servers persist their tokens in, server processes
 * over real HTTP, PKCE, and bursts of concurrent token requests.
 *
 * A server program (`tests/support/*_server.ts`) reads `DATABASE_URL`
 * (whose `search_path` holds the tables) and `MODE` (`store`: codes in the
 * code store; `control`: the server's usual storage, with 1 ms of latency
 * per call), stores each token it issues as a row of `tokens(code,
 * access_token)`, and, run with `--port 0`, prints `{"port":n}` once it
 * listens.
 *
 * @module
 */

import { assertFalse } from "@std/assert";
import postgres from "../../tools/postgres.ts";
import { migrate } from "../../mod.ts";
import { OPENAUTH_KV } from "../../examples/openauth_issuer.ts";
import {
  databaseUrl,
  storedCodes,
  type TestDatabase,
  testDatabase,
} from "./database.ts";

import { newVerifier, s256 } from "../../examples/pkce.ts";

export { newVerifier, s256 };

/** The test database, its URL with the schema as search_path. */
export interface ServerDatabase extends TestDatabase {
  /** A URL whose `search_path` is the test's schema. */
  readonly url: string;
  /** Tokens persisted for `code` (by any process). */
  tokensFor(code: string): Promise<number>;
  /** Tokens persisted in all. */
  tokens(): Promise<number>;
  /** Codes stored in the code store. */
  storedCodes(): Promise<number>;
  /** Makes every stored code's expiry a second ago. */
  expireCodes(): Promise<void>;
}

/**
 * A fresh schema with the code store's default table, a `tokens` table and
 * a `control_codes` table for the servers' usual storage.
 */
export async function serverDatabase(): Promise<ServerDatabase> {
  const t = await testDatabase();
  const url = new URL(databaseUrl());
  url.searchParams.set("search_path", t.schema);
  const sql = postgres(url.href, { max: 1, onnotice: () => {} });
  try {
    await migrate(sql);
    await sql`create table tokens (code text not null, access_token text)`;
    await sql`
      create table control_codes (code text primary key, value jsonb not null)
    `;
    await sql.unsafe(OPENAUTH_KV);
  } finally {
    await sql.end({ timeout: 5 });
  }
  return Object.assign(t, {
    url: url.href,
    async tokensFor(code: string) {
      const [{ n }] = await t.sql<[{ n: number }]>`
        select count(*)::int as n from ${t.sql(`${t.schema}.tokens`)}
        where code = ${code}
      `;
      return n;
    },
    async tokens() {
      const [{ n }] = await t.sql<[{ n: number }]>`
        select count(*)::int as n from ${t.sql(`${t.schema}.tokens`)}
      `;
      return n;
    },
    storedCodes: () =>
      storedCodes({ sql: t.sql, table: `${t.schema}.authorization_codes` }),
    async expireCodes() {
      // Whole seconds: the store refuses a fractional expiry.
      await t.sql`
        update ${t.sql(`${t.schema}.authorization_codes`)}
        set expires_at = date_trunc('second', now()) - interval '1 second'
      `;
    },
  });
}

/** The demo client of the example servers. */
export const CLIENT_ID = "demo-client";
/** Its redirect URI. */
export const REDIRECT_URI = "http://127.0.0.1/callback";

/**
 * A code from a server whose `GET /authorize` answers with the redirect to
 * the client at once (the examples approve every request for a demo
 * user): `code` is empty when the redirect carries an error.
 */
export async function authorize(
  base: string,
  { pkce = true, resource }: { pkce?: boolean; resource?: string } = {},
): Promise<IssuedCode & { params: URLSearchParams }> {
  const verifier = newVerifier();
  const response = await fetch(
    `${base}/authorize?${new URLSearchParams({
      response_type: "code",
      client_id: CLIENT_ID,
      redirect_uri: REDIRECT_URI,
      state: "st4te",
      ...(pkce
        ? { code_challenge: s256(verifier), code_challenge_method: "S256" }
        : {}),
      ...(resource === undefined ? {} : { resource }),
    })}`,
    { redirect: "manual" },
  );
  const body = await response.text();
  const location = response.headers.get("location");
  if (!location) {
    return {
      code: "",
      verifier,
      params: new URLSearchParams({ status: String(response.status), body }),
    };
  }
  const params = new URL(location).searchParams;
  return { code: params.get("code") ?? "", verifier, params };
}

/**
 * `POST /token` for a code, as a public client with its verifier; `form`
 * replaces or adds parameters (an empty value leaves one out).
 */
export function token(
  base: string,
  { code, verifier }: IssuedCode,
  form: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, string> }> {
  const body = new URLSearchParams({
    grant_type: "authorization_code",
    client_id: CLIENT_ID,
    code,
    redirect_uri: REDIRECT_URI,
    code_verifier: verifier,
    ...form,
  });
  for (const [name, value] of Object.entries(form)) {
    if (value === "") body.delete(name);
  }
  return fetch(`${base}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body,
  }).then(async (r) => ({ status: r.status, body: await r.json() }));
}

/** Whether a token request for the code got a token. */
export async function redeem(base: string, code: IssuedCode): Promise<boolean> {
  return (await token(base, code)).status === 200;
}

/** A server process. */
export interface ServerProcess extends AsyncDisposable {
  /** Its base URL. */
  readonly base: string;
}

/**
 * Starts `program` as a process, waits until it listens: a Deno module,
 * or with `runtime` a JavaScript file run by that binary (Node, Bun) from
 * `cwd`.
 */
export async function startServer(
  program: URL | string,
  env: Record<string, string>,
  runtime?: { readonly bin: string; readonly cwd: string },
): Promise<ServerProcess> {
  const path = typeof program === "string" ? program : program.pathname;
  const child = new Deno.Command(runtime?.bin ?? Deno.execPath(), {
    args: runtime ? [path, "--port", "0"] : ["run", "-A", path, "--port", "0"],
    ...(runtime ? { cwd: runtime.cwd } : {}),
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) {
      await child.status;
      throw new Error(`${path} exited before listening`);
    }
    text += value;
  }
  const { port } = JSON.parse(text.slice(0, text.indexOf("\n")));
  // The rest is request logs: read and dropped, so the pipe never fills.
  const drained = (async () => {
    while (!(await reader.read().catch(() => ({ done: true }))).done);
  })();
  return {
    base: `http://127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await drained;
    },
  };
}

/** A code, with the verifier its challenge was made from. */
export interface IssuedCode {
  readonly code: string;
  readonly verifier: string;
}

/**
 * For each of `codes` codes (issued one after another by `issue`), `per`
 * token requests at once, spread over `servers`; returns the tokens issued
 * per code (the requests that got `ok`) and the codes.
 */
export async function bursts(
  servers: readonly ServerProcess[],
  codes: number,
  per: number,
  issue: () => Promise<IssuedCode>,
  redeem: (base: string, code: IssuedCode) => Promise<boolean>,
): Promise<{ issued: number[]; codes: IssuedCode[] }> {
  const issued: number[] = [];
  const all: IssuedCode[] = [];
  for (let i = 0; i < codes; i++) {
    const code = await issue();
    all.push(code);
    const results = await Promise.all(
      Array.from(
        { length: per },
        (_, j) => redeem(servers[j % servers.length]!.base, code),
      ),
    );
    issued.push(results.filter(Boolean).length);
  }
  return { issued, codes: all };
}

/**
 * A control: codes issued one after another, each presented 50 times at
 * once over `servers`, until one gets more than one token, or a minute has
 * passed (how often the race is won depends on the machine: the control
 * runs until it has seen it, bounded in time). Logs the tokens per code
 * under `label`; returns the most for one code.
 */
export async function controlDoubles(
  label: string,
  servers: readonly ServerProcess[],
  issue: () => Promise<IssuedCode>,
  redeemAt: (base: string, code: IssuedCode) => Promise<boolean>,
): Promise<number> {
  const issued: number[] = [];
  const giveUp = performance.now() + 60_000;
  while (Math.max(0, ...issued) <= 1 && performance.now() < giveUp) {
    issued.push(...(await bursts(servers, 1, 50, issue, redeemAt)).issued);
  }
  console.log(`${label}: tokens per code ${JSON.stringify(issued)}`);
  return Math.max(...issued);
}

/**
 * Secrets under other names and deeper than a denylist of top-level keys
 * would catch, for the client and user records of the secrets tests; and
 * the user's email, which no server reads back either.
 */
export const SECRETS = {
  clientSecret: "S3CRET-client-credentials",
  secret: "S3CRET-client-secret",
  privateKey: "S3CRET-private-key",
  apiKey: "S3CRET-api-key",
  password: "S3CRET-profile-password",
  passwordHash: "S3CRET-login-password-hash",
  hashedPassword: "S3CRET-hashed-password",
  passwordDigest: "S3CRET-password-digest",
  email: "user@example.com",
} as const;

/** A user record holding {@linkcode SECRETS}, nested and oddly named. */
export function secretiveUser<Id extends string | number>(
  id: Id,
): { readonly id: Id; readonly [key: string]: unknown } {
  return {
    id,
    email: SECRETS.email,
    profile: { password: SECRETS.password },
    logins: [{ passwordHash: SECRETS.passwordHash }],
    hashedPassword: SECRETS.hashedPassword,
    passwordDigest: SECRETS.passwordDigest,
  };
}

/** The fields of a client record holding {@linkcode SECRETS}. */
export const SECRETIVE_CLIENT_FIELDS = {
  credentials: { clientSecret: SECRETS.clientSecret },
  privateKey: SECRETS.privateKey,
  settings: { nested: [{ apiKey: SECRETS.apiKey }] },
} as const;

/**
 * The code store's only row, as JSON text, after checking that none of
 * {@linkcode SECRETS} is in it.
 */
export async function rowWithoutSecrets(t: ServerDatabase): Promise<string> {
  const [{ row }] = await t.sql<[{ row: string }]>`
    select row_to_json(c)::text as row
    from ${t.sql(`${t.schema}.authorization_codes`)} as c
  `;
  for (const [name, secret] of Object.entries(SECRETS)) {
    assertFalse(row.includes(secret), `${name} reached the row: ${row}`);
  }
  return row;
}
