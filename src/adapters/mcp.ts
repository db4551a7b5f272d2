/**
 * Authorization codes for an `OAuthServerProvider` of the official
 * TypeScript MCP SDK (`@modelcontextprotocol/sdk` 1.x, `mcpAuthRouter`) on
 * the code store, so that each code is redeemed exactly once.
 *
 * The SDK's token endpoint authenticates the client, then (unless the
 * provider sets `skipLocalPkceValidation`) reads the code's challenge with
 * `challengeForAuthorizationCode`, checks PKCE, and calls
 * `exchangeAuthorizationCode`; it never compares `redirect_uri`, and it
 * answers 500 to any error that is not its own `OAuthError`. A provider
 * that reads the code for the challenge, then reads and deletes it in the
 * exchange, lets concurrent token requests with one code all pass, in one
 * process or several. Here the exchange is one `take`, followed by every
 * check the SDK leaves to the provider: of any number of concurrent
 * requests, in any number of processes, exactly one gets the grant, and
 * every other gets `null`, for the provider to answer with the SDK's
 * `InvalidGrantError` (400 `invalid_grant`). The module does not depend on
 * the SDK: the provider's methods are yours, and call these.
 *
 * @example Use it in your provider
 * ```ts ignore
 * import process from "node:process";
 * import type { OAuthServerProvider } from "@modelcontextprotocol/sdk/server/auth/provider";
 * import { InvalidGrantError } from "@modelcontextprotocol/sdk/server/auth/errors.js";
 * import postgres from "postgres";
 * import { createCodeStore } from "@attesto/code-store";
 * import { createMcpAuthorizationCodes } from "@attesto/code-store/mcp";
 *
 * const sql = postgres(process.env.DATABASE_URL!, { fetch_types: false });
 * const codes = createMcpAuthorizationCodes(createCodeStore(sql), {
 *   // Revoke what the code produced; hold even if the tokens are stored later.
 *   onReplay: (spent) => sql`insert into revoked_codes values (${spent.codeHash})`,
 * });
 * const provider: OAuthServerProvider = {
 *   clientsStore,
 *   skipLocalPkceValidation: codes.skipLocalPkceValidation,
 *   challengeForAuthorizationCode: codes.challengeForAuthorizationCode,
 *   async authorize(client, params, res) {
 *     const code = await codes.issue(client, params, { subject: userId });
 *     const to = new URL(params.redirectUri);
 *     to.searchParams.set("code", code);
 *     if (params.state !== undefined) to.searchParams.set("state", params.state);
 *     res.redirect(302, to.href);
 *   },
 *   async exchangeAuthorizationCode(client, code, verifier, redirectUri, resource) {
 *     const grant = await codes.redeem(client, code, verifier, redirectUri, resource);
 *     if (grant === null) throw new InvalidGrantError("invalid authorization code");
 *     return await mintTokens(grant); // linked to grant.codeHash
 *   },
 *   exchangeRefreshToken,
 *   verifyAccessToken, // refuses a token whose code hash is revoked
 * };
 * ```
 *
 * @module
 */

import { timingSafeEqual } from "@std/crypto/timing-safe-equal";
import { checkStore, isExpired, newCode } from "./_shared.ts";
import { InvalidRecordError } from "../errors.ts";
import { hashCode } from "../hash_code.ts";
import type { CodeStore } from "../store.ts";
import type { SpentCode } from "../types.ts";

export { InvalidRecordError };
export type { SpentCode };

/**
 * A client, as the SDK hands it to the provider
 * (`OAuthClientInformationFull`): only its `client_id` is read.
 */
export interface McpClient {
  /** The client's id (RFC 7591 §3.2.1). */
  readonly client_id: string;
}

/**
 * An authorization request, as the SDK's authorization handler passes it
 * to the provider's `authorize` (`AuthorizationParams`), after checking
 * the client, the redirect URI and `code_challenge_method=S256`. The SDK
 * passes `state` and `resource` as explicit `undefined` when absent, and
 * `scopes` as `[]` (no `scope`) or `[""]` (an empty one).
 */
export interface McpAuthorizationParams {
  /** The client's `state`; not stored (the provider puts it on the redirect). */
  readonly state?: string | undefined;
  /** The requested scopes; empty strings are dropped. */
  readonly scopes?: readonly string[] | undefined;
  /** The PKCE `code_challenge` (RFC 7636 §4.2), S256. */
  readonly codeChallenge: string;
  /** The redirect URI: the requested one, or the client's only registered one. */
  readonly redirectUri: string;
  /** The RFC 8707 resource indicator, if the client sent one. */
  readonly resource?: URL | undefined;
}

/** What the user granted, as {@linkcode McpAuthorizationCodes.issue} takes it. */
export interface McpGrantInput {
  /** The resource owner: the authenticated user's identifier. */
  readonly subject: string;
}

/** A redeemed code, as {@linkcode McpAuthorizationCodes.redeem} returns it. */
export interface McpGrant {
  /** The client the code was issued to (the one that redeemed it). */
  readonly clientId: string;
  /** The resource owner. */
  readonly subject: string;
  /** The granted scopes (a fresh array). */
  readonly scopes: string[];
  /** The redirect URI the code was issued for. */
  readonly redirectUri: string;
  /** The RFC 8707 resource the code was issued for, if any. */
  readonly resource?: URL;
  /**
   * The base64url SHA-256 hash of the code (as `hashCode` computes it): the
   * key to link the tokens minted from it to, so that a replay
   * ({@linkcode McpAuthorizationCodesOptions.onReplay}, given the same hash
   * in {@linkcode SpentCode.codeHash}) can revoke them.
   */
  readonly codeHash: string;
}

/** Options for {@linkcode createMcpAuthorizationCodes}. */
export interface McpAuthorizationCodesOptions {
  /**
   * How long a code may be redeemed, in seconds: an integer from 1 to 600
   * (RFC 6749 §4.1.2: "A maximum authorization code lifetime of 10 minutes
   * is RECOMMENDED"). Default 60.
   */
  readonly ttlSeconds?: number | undefined;
  /**
   * Called, and awaited, when a spent code is presented again by the client
   * it was issued to, with a verifier that matches its challenge (and the
   * same `redirect_uri`, when one is sent): the code has leaked, or the
   * client used it twice, and the tokens issued from it should be revoked
   * (RFC 6749 §4.1.2, RFC 9700 §4.2.4). A replay from another client or with
   * a wrong verifier calls nothing, so that anyone holding a leaked code
   * cannot revoke a user's tokens.
   *
   * The losers of a concurrent burst from the client itself are such
   * replays, and one can run before the winner has stored its tokens:
   * record the revocation (for instance, the code hash in a table checked
   * whenever a token is used) rather than only deleting the tokens stored
   * so far. An error it throws rejects `redeem`.
   */
  readonly onReplay?: ((spent: SpentCode) => unknown) | undefined;
}

/** The closures {@linkcode createMcpAuthorizationCodes} returns. */
export interface McpAuthorizationCodes {
  /**
   * `true`: copy it onto the provider, so that the SDK passes the
   * `code_verifier` to `exchangeAuthorizationCode` (and on to
   * {@linkcode McpAuthorizationCodes.redeem}, which checks it) instead of
   * reading the code first with `challengeForAuthorizationCode`.
   */
  readonly skipLocalPkceValidation: true;
  /**
   * Stores a fresh code for the authorization request, in the provider's
   * `authorize`, and returns it: at least 256 bits from the platform's
   * CSPRNG (43 base64url characters), stored for `ttlSeconds`.
   *
   * @param client The client, as the SDK passes it.
   * @param params The authorization request, as the SDK passes it.
   * @param grant The user who granted it.
   * @returns The code, for the redirect to the client.
   * @throws {InvalidRecordError} If a field cannot be stored: a `resource`
   * with a fragment (RFC 8707 §2), a malformed challenge or scope, an empty
   * subject. Nothing is stored.
   * @throws {Error} Database errors, as the store raised them.
   */
  issue(
    client: McpClient,
    params: McpAuthorizationParams,
    grant: McpGrantInput,
  ): Promise<string>;
  /**
   * Refuses, always (a rejected promise): only the one `take` of
   * {@linkcode McpAuthorizationCodes.redeem} may look at a code. The SDK
   * calls it only when the provider's `skipLocalPkceValidation` is not
   * `true`; the error says so.
   */
  challengeForAuthorizationCode(
    client: McpClient,
    authorizationCode: string,
  ): Promise<never>;
  /**
   * Redeems a code, in the provider's `exchangeAuthorizationCode`, with the
   * arguments the SDK gave it: one `take` (the code is spent, whatever
   * follows), then every check the SDK leaves to the provider: the same
   * client; a verifier that matches the S256 challenge (RFC 7636 §4.6); the
   * authorized `redirect_uri`, when one is sent (the SDK filled in the
   * client's registered one at the authorization endpoint when it was
   * omitted there); a `resource`, when sent, that was authorized (RFC 8707
   * §2.2); not expired.
   *
   * @param client The authenticated client.
   * @param authorizationCode The code presented.
   * @param codeVerifier The `code_verifier` (passed by the SDK because
   * `skipLocalPkceValidation` is `true`).
   * @param redirectUri The `redirect_uri` of the token request, if sent.
   * @param resource The `resource` of the token request, if sent.
   * @returns The grant, for exactly one request per code; `null` for every
   * `invalid_grant` cause (unknown, spent, expired, another client, a wrong
   * verifier, redirect URI or resource), which the provider answers by
   * throwing the SDK's `InvalidGrantError`.
   * @throws {Error} Database errors, as the store raised them (the code may
   * or may not be spent, and is never returned to anyone else), and errors
   * of `onReplay`.
   */
  redeem(
    client: McpClient,
    authorizationCode: string,
    codeVerifier?: string | undefined,
    redirectUri?: string | undefined,
    resource?: URL | undefined,
  ): Promise<McpGrant | null>;
}

/** The default lifetime of a code, in seconds. */
const DEFAULT_TTL_SECONDS = 60;
/** RFC 6749 §4.1.2: at most 10 minutes. */
const MAX_TTL_SECONDS = 600;

/** RFC 7636 §4.1: `code-verifier = 43*128unreserved`. */
const VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/;

const encoder = new TextEncoder();

/**
 * RFC 7636 §4.6: whether `verifier` is a well-formed code verifier whose
 * S256 transform, `BASE64URL(SHA256(ASCII(verifier)))` (the store's
 * `hashCode` of it), is `challenge`.
 */
function pkceMatches(verifier: unknown, challenge: string): boolean {
  if (typeof verifier !== "string" || !VERIFIER.test(verifier)) return false;
  return timingSafeEqual(
    encoder.encode(hashCode(verifier)),
    encoder.encode(challenge),
  );
}

/** The error of a misconfigured provider. */
const CHALLENGE_REFUSED =
  "challengeForAuthorizationCode: set the provider's skipLocalPkceValidation " +
  "to codes.skipLocalPkceValidation (true): redeem() checks PKCE in the " +
  "same step that spends the code, and nothing else may read it";

/**
 * Creates the authorization-code closures of an MCP SDK
 * `OAuthServerProvider` on `store`.
 *
 * Each code is stored with the client id, the subject, the redirect URI,
 * the scopes (less empty ones), the S256 challenge and the resource, if
 * any; `state` is not stored.
 *
 * @param store The code store.
 * @param options The codes' lifetime, and what to do on a replay.
 * @returns `skipLocalPkceValidation`, `issue`,
 * `challengeForAuthorizationCode` and `redeem`.
 * @throws {TypeError} If `store` is not a code store, or an option is of
 * the wrong type.
 * @throws {RangeError} If `ttlSeconds` is not an integer from 1 to 600.
 *
 * @example
 * ```ts
 * import { createMemoryCodeStore } from "@attesto/code-store/memory";
 * import { createMcpAuthorizationCodes } from "@attesto/code-store/mcp";
 * import { assertEquals } from "@std/assert";
 *
 * const replays: string[] = [];
 * const codes = createMcpAuthorizationCodes(createMemoryCodeStore(), {
 *   onReplay: (spent) => void replays.push(spent.codeHash),
 * });
 * const client = { client_id: "s6BhdRkqt3", redirect_uris: ["https://client.example.org/cb"] };
 * // As the SDK calls the provider's authorize:
 * const code = await codes.issue(client, {
 *   state: undefined,
 *   scopes: ["mcp:tools"],
 *   codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
 *   redirectUri: "https://client.example.org/cb",
 *   resource: new URL("https://mcp.example.com/mcp"),
 * }, { subject: "user-42" });
 *
 * // As the SDK calls exchangeAuthorizationCode (skipLocalPkceValidation):
 * const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
 * const grant = await codes.redeem(client, code, verifier, undefined, undefined);
 * assertEquals(grant?.subject, "user-42");
 * assertEquals(grant?.resource?.href, "https://mcp.example.com/mcp");
 *
 * // The same request again: null (invalid_grant), and a valid replay.
 * assertEquals(await codes.redeem(client, code, verifier), null);
 * assertEquals(replays, [grant?.codeHash]);
 * ```
 */
export function createMcpAuthorizationCodes(
  store: CodeStore,
  options: McpAuthorizationCodesOptions = {},
): McpAuthorizationCodes {
  checkStore(store, "createMcpAuthorizationCodes");
  const ttl = options.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  if (typeof ttl !== "number") {
    throw new TypeError("options.ttlSeconds must be a number of seconds");
  }
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) {
    throw new RangeError(
      `options.ttlSeconds must be an integer from 1 to ${MAX_TTL_SECONDS} ` +
        "(RFC 6749 §4.1.2: at most 10 minutes)",
    );
  }
  const onReplay = options.onReplay;
  if (onReplay !== undefined && typeof onReplay !== "function") {
    throw new TypeError("options.onReplay must be a function");
  }

  return {
    skipLocalPkceValidation: true,

    async issue(client, params, grant) {
      const resource = params.resource === undefined
        ? undefined
        : String(params.resource);
      // Refused here, with the reason, rather than as the store's field.
      if (
        resource !== undefined &&
        (!URL.canParse(resource) || resource.includes("#"))
      ) {
        throw new InvalidRecordError(
          "params.resource",
          "must be an absolute URI without a fragment (RFC 8707 §2); " +
            "the authorization code was not stored",
        );
      }
      const code = newCode();
      await store.put({
        code,
        expiresAt: Math.floor(Date.now() / 1000) + ttl,
        data: {
          clientId: client.client_id,
          subject: grant.subject,
          redirectUri: params.redirectUri,
          scope: (params.scopes ?? []).filter((scope) => scope !== ""),
          codeChallenge: params.codeChallenge,
          codeChallengeMethod: "S256",
          ...(resource === undefined ? {} : { resource: [resource] }),
        },
      });
      return code;
    },

    challengeForAuthorizationCode() {
      return Promise.reject(new Error(CHALLENGE_REFUSED));
    },

    async redeem(client, code, verifier, redirectUri, resource) {
      const entry = await store.take(code);
      if (entry === null) {
        if (onReplay !== undefined) {
          // Spent before: revoke only on an otherwise valid replay.
          const spent = await store.spent(code);
          if (
            spent !== null && spent.clientId === client.client_id &&
            pkceMatches(verifier, spent.codeChallenge) &&
            (redirectUri === undefined || redirectUri === spent.redirectUri)
          ) {
            await onReplay(spent);
          }
        }
        return null;
      }
      const { data } = entry;
      const sent = resource === undefined ? undefined : String(resource);
      if (
        isExpired(entry.expiresAt) ||
        data.clientId !== client.client_id ||
        !pkceMatches(verifier, data.codeChallenge) ||
        (redirectUri !== undefined && redirectUri !== data.redirectUri) ||
        (sent !== undefined && !data.resource.includes(sent))
      ) {
        return null;
      }
      const authorized = sent ?? data.resource[0];
      return {
        clientId: data.clientId,
        subject: data.subject,
        scopes: [...data.scope],
        redirectUri: data.redirectUri,
        ...(authorized === undefined ? {} : { resource: new URL(authorized) }),
        codeHash: entry.codeHash,
      };
    },
  };
}
