/**
 * The OpenAuth flow the tests drive, through OpenAuth's own client
 * (`createClient`, PKCE S256): the authorization request through the
 * issuer's demo provider, and the code exchange.
 *
 * @module
 */

import { assert } from "@std/assert";
import { createClient } from "@openauthjs/openauth/client";
import { type IssuedCode, REDIRECT_URI } from "./oauth_servers.ts";

/** OpenAuth's client of the demo issuer at `base`. */
export const client = (base: string) =>
  createClient({ clientID: "demo-client", issuer: base });

/** A code through OpenAuth's client and the issuer's authorize flow. */
export async function authorize(
  base: string,
  { pkce = true } = {},
): Promise<IssuedCode & { params: URLSearchParams }> {
  const { url, challenge } = await client(base).authorize(
    REDIRECT_URI,
    "code",
    { pkce },
  );
  const cookies: string[] = [];
  let next = url;
  for (let hops = 0; hops < 5; hops++) {
    const response = await fetch(next, {
      redirect: "manual",
      headers: { cookie: cookies.join("; ") },
    });
    await response.body?.cancel();
    for (const cookie of response.headers.getSetCookie()) {
      cookies.push(cookie.split(";")[0]!);
    }
    const location = response.headers.get("location");
    assert(location, `no redirect from ${next}: ${response.status}`);
    next = new URL(location, next).href;
    if (next.startsWith(REDIRECT_URI)) {
      const params = new URL(next).searchParams;
      return {
        code: params.get("code") ?? "",
        verifier: challenge.verifier ?? "",
        params,
      };
    }
  }
  throw new Error("too many redirects");
}

/** The client's exchange: whether it got tokens. */
export async function exchange(base: string, { code, verifier }: IssuedCode) {
  const result = await client(base).exchange(code, REDIRECT_URI, verifier);
  return !result.err;
}
