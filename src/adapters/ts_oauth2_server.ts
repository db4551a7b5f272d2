/**
 * An `OAuthAuthCodeRepository` for `@jmondi/oauth2-server` (ts-oauth2-server,
 * 4.x) on the code store, so that each code is redeemed exactly once.
 *
 * The library's token endpoint checks `isRevoked` (a read), issues and
 * persists the tokens, and only then calls `revoke`: concurrent token
 * requests with one code all pass the check, and each gets tokens (making
 * `revoke` throw still leaves their tokens persisted). Here the first
 * repository call of a token request is the store's atomic `take`: with JWT
 * codes (the default) that is `isRevoked(id)`, with
 * `useOpaqueAuthorizationCodes` it is `getByIdentifier(id)`, and the second
 * call gets the code from the first, in the same process. The repository
 * tells the two apart by that order, so one repository serves either kind
 * of code with no option. Of any number of concurrent requests, in any
 * number of processes, exactly one takes the code; every other is told the
 * code is revoked (or invalid) and fails before any token is minted. The
 * module does not depend on the library: a repository is plain methods.
 *
 * @example Use it in the authorization server
 * ```ts ignore
 * import process from "node:process";
 * import { AuthorizationServer } from "@jmondi/oauth2-server";
 * import postgres from "postgres";
 * import { createCodeStore } from "@attesto/code-store";
 * import { createAuthCodeRepository } from "@attesto/code-store/ts-oauth2-server";
 *
 * const sql = postgres(process.env.DATABASE_URL!, { fetch_types: false });
 * const authCodeRepository = createAuthCodeRepository(createCodeStore(sql));
 * const server = new AuthorizationServer(clientRepository, tokenRepository,
 *   scopeRepository, "secret-key", { requiresPKCE: true, requiresS256: true });
 * server.enableGrantType({
 *   grant: "authorization_code",
 *   userRepository,
 *   authCodeRepository,
 * });
 * ```
 *
 * @module
 */

import {
  checkStore,
  isExpired,
  newCode,
  pick,
  s256Challenge,
} from "./_shared.ts";
import { InvalidAuthorizationCodeError, PkceRequiredError } from "../errors.ts";
import type { CodeStore } from "../store.ts";
import type { JsonObject } from "../types.ts";

export { InvalidAuthorizationCodeError, PkceRequiredError };

/** A grant type (`GrantIdentifier`). */
export type TsOAuth2GrantIdentifier =
  | "authorization_code"
  | "client_credentials"
  | "refresh_token"
  | "password"
  | "implicit"
  | "urn:ietf:params:oauth:grant-type:token-exchange"
  | `custom:${string}`;

/** A client, as the library hands it over (`OAuthClient`). */
export interface TsOAuth2Client {
  /** The client's id. */
  id: string;
  /** Its name. */
  name: string;
  /** Its secret, if confidential (never stored with a code). */
  secret?: string | null;
  /** Its redirect URIs. */
  redirectUris: string[];
  /** The grants it may use. */
  allowedGrants: TsOAuth2GrantIdentifier[];
  /** The scopes it may ask for. */
  scopes: TsOAuth2Scope[];
  /** Anything else the client repository returned. */
  [key: string]: unknown;
}

/** A user (`OAuthUser`). */
export interface TsOAuth2User {
  /** The user's id: the store's subject. */
  id: string | number;
  /** Anything else the user repository returned. */
  [key: string]: unknown;
}

/** A scope (`OAuthScope`). */
export interface TsOAuth2Scope {
  /** The scope token. */
  name: string;
  /** Anything else the scope repository returned. */
  [key: string]: unknown;
}

/** An authorization code, as the library reads and writes it (`OAuthAuthCode`). */
export interface TsOAuth2AuthCode {
  /** The code's identifier (inside the JWT, or the opaque code itself). */
  code: string;
  /** The redirect URI of the authorization request. */
  redirectUri?: string | null;
  /** The PKCE challenge (required, with `S256`). */
  codeChallenge?: string | null;
  /** The PKCE method. */
  codeChallengeMethod?: "S256" | "plain" | null;
  /** When it expires. */
  expiresAt: Date;
  /** The user who granted it. */
  user?: TsOAuth2User | null;
  /** The client it was issued to. */
  client: TsOAuth2Client;
  /** The granted scopes. */
  scopes: TsOAuth2Scope[];
}

/** The repository {@linkcode createAuthCodeRepository} returns (`OAuthAuthCodeRepository`). */
export interface CodeStoreAuthCodeRepository {
  /**
   * With opaque codes, a token request's first call: takes the code. With
   * JWT codes, its second: hands over the code the request's `isRevoked`
   * took, in this process.
   *
   * @throws {InvalidAuthorizationCodeError} If the code cannot be redeemed
   * (never issued, spent, revoked, expired, or taken by another request):
   * the library answers it as `400 invalid_grant`.
   */
  getByIdentifier(authCodeCode: string): Promise<TsOAuth2AuthCode>;
  /** A new code with a fresh 256-bit identifier. */
  issueAuthCode(
    client: TsOAuth2Client,
    user: TsOAuth2User | undefined,
    scopes: TsOAuth2Scope[],
  ): TsOAuth2AuthCode;
  /**
   * Stores a code (`put`).
   *
   * @throws {PkceRequiredError} If it has no S256 challenge; nothing is
   * stored.
   * @throws {TypeError} If it has no user.
   */
  persist(authCode: TsOAuth2AuthCode): Promise<void>;
  /**
   * `false` for exactly one request per code: with JWT codes, the
   * request's first call, which takes the code; with opaque codes, its
   * second, for the request whose `getByIdentifier` took it.
   */
  isRevoked(authCodeCode: string): Promise<boolean>;
  /**
   * After a redemption, nothing (the code was deleted when it was taken);
   * otherwise (the revocation endpoint) the code is spent.
   */
  revoke(authCodeCode: string): Promise<void>;
}

/** Options for {@linkcode createAuthCodeRepository}. */
export interface AuthCodeRepositoryOptions {
  /**
   * Ignored: the repository tells JWT codes from opaque ones by the order
   * of the library's calls, so one repository serves either kind.
   *
   * @deprecated The repository needs no option: remove it. It is accepted
   * (and ignored) for one minor version.
   */
  readonly opaque?: boolean | undefined;
}

/**
 * How long a code taken by one repository call waits, in this process,
 * for the same request's next call (ms). A request that fails between the
 * two never makes it; the code is spent all the same.
 */
const HANDOVER_MS = 60_000;

/** A code taken by a token request's first call, for its second. */
interface Taken {
  readonly code: TsOAuth2AuthCode;
  /** The call that took it: `isRevoked` (JWT codes) or `getByIdentifier` (opaque). */
  readonly by: "isRevoked" | "getByIdentifier";
  readonly at: number;
}

/** The fields of the library's `OAuthClient` a code keeps (not `secret`). */
const CLIENT_FIELDS = ["name", "redirectUris", "allowedGrants"] as const;

/**
 * Creates an `OAuthAuthCodeRepository` for `@jmondi/oauth2-server` on
 * `store`.
 *
 * Client id, user id (as `subject`), redirect URI, scope names, PKCE and
 * expiry go to the store's fields. Of the client, user and scope objects
 * the code keeps what the library's types declare, less the client's
 * `secret`: the client's `id`, `name`, `redirectUris`, `allowedGrants` and
 * its scopes' names, the user's `id` and the scopes' names. Nothing else
 * of them is stored, whatever its name or depth: the library reads back
 * only `client.id`, `user.id` and the scopes' `name` (opaque codes; JWT
 * codes carry them in the JWT). A code without an S256 challenge is
 * refused ({@linkcode PkceRequiredError}): create the server with
 * `requiresPKCE: true` and `requiresS256: true`.
 *
 * The same repository works for JWT codes and for
 * `useOpaqueAuthorizationCodes`: the first call of a token request takes
 * the code (`isRevoked` for JWT codes, `getByIdentifier` for opaque ones)
 * and the second gets it from the first, in the same process.
 *
 * @param store The code store.
 * @param options Nothing is needed (`opaque` is deprecated and ignored).
 * @returns The repository.
 * @throws {TypeError} If `store` is not a code store, or `options.opaque`
 * is given and not a boolean.
 *
 * @example
 * ```ts
 * import { createMemoryCodeStore } from "@attesto/code-store/memory";
 * import { createAuthCodeRepository } from "@attesto/code-store/ts-oauth2-server";
 * import { assertEquals } from "@std/assert";
 *
 * const repository = createAuthCodeRepository(createMemoryCodeStore());
 * const client = {
 *   id: "s6BhdRkqt3",
 *   name: "demo",
 *   redirectUris: ["https://client.example.org/cb"],
 *   allowedGrants: ["authorization_code" as const],
 *   scopes: [],
 * };
 * const code = repository.issueAuthCode(client, { id: "user-42" }, []);
 * code.expiresAt = new Date(Date.now() + 60_000);
 * code.redirectUri = "https://client.example.org/cb";
 * code.codeChallenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
 * code.codeChallengeMethod = "S256";
 * await repository.persist(code);
 *
 * // A JWT-code token request: isRevoked takes, getByIdentifier hands over.
 * assertEquals(await repository.isRevoked(code.code), false);
 * assertEquals((await repository.getByIdentifier(code.code)).user?.id, "user-42");
 * assertEquals(await repository.isRevoked(code.code), true); // a replay
 * ```
 */
export function createAuthCodeRepository(
  store: CodeStore,
  options: AuthCodeRepositoryOptions = {},
): CodeStoreAuthCodeRepository {
  checkStore(store, "createAuthCodeRepository");
  const opaque = options?.opaque;
  if (opaque !== undefined && typeof opaque !== "boolean") {
    throw new TypeError(
      "createAuthCodeRepository: options.opaque (deprecated, ignored) must " +
        "be a boolean if given",
    );
  }
  // Codes taken by a request's first call, for its second, by identifier.
  const handover = new Map<string, Taken>();
  // Codes handed over and not yet revoked: the library's revoke after a
  // redemption needs no query.
  const redeemed = new Map<string, number>();
  const sweep = () => {
    const oldest = performance.now() - HANDOVER_MS;
    for (const [id, { at }] of handover) {
      if (at > oldest) break;
      handover.delete(id);
    }
    for (const [id, at] of redeemed) {
      if (at > oldest) break;
      redeemed.delete(id);
    }
  };
  /** The code for the first call of a request, taken from the store. */
  const take = async (
    id: string,
    by: Taken["by"],
  ): Promise<TsOAuth2AuthCode | undefined> => {
    const entry = await store.take(id);
    // JWT codes carry their own expiry, which the library checks; the
    // stored one is checked here too (the code is spent all the same).
    if (entry === null || isExpired(entry.expiresAt)) return undefined;
    const { data } = entry;
    const context = data.context as {
      client?: JsonObject;
      userId?: string | number;
      clientScopes?: string[];
    };
    const code: TsOAuth2AuthCode = {
      code: id,
      redirectUri: data.redirectUri,
      codeChallenge: data.codeChallenge,
      codeChallengeMethod: data.codeChallengeMethod,
      expiresAt: new Date(entry.expiresAt * 1000),
      user: { id: context.userId ?? data.subject },
      client: {
        ...context.client,
        id: data.clientId,
        scopes: (context.clientScopes ?? []).map((name) => ({ name })),
      } as TsOAuth2Client,
      scopes: data.scope.map((name) => ({ name })),
    };
    sweep();
    handover.set(id, { code, by, at: performance.now() });
    return code;
  };
  /** The code the request's first call took, for its second. */
  const handOver = (id: string): TsOAuth2AuthCode => {
    const taken = handover.get(id)!;
    handover.delete(id);
    redeemed.set(id, performance.now());
    return taken.code;
  };

  return {
    async getByIdentifier(id) {
      sweep();
      const taken = handover.get(id);
      // JWT codes: the second call of the request whose isRevoked took it.
      if (taken?.by === "isRevoked") return handOver(id);
      // Opaque codes: the first call (a token or revocation request). A
      // code another request's getByIdentifier holds is spent.
      const code = taken ? undefined : await take(id, "getByIdentifier");
      if (!code) throw new InvalidAuthorizationCodeError();
      return code;
    },

    issueAuthCode(client, user, scopes) {
      return {
        code: newCode(),
        client,
        user: user ?? null,
        scopes,
        expiresAt: new Date(),
        redirectUri: null,
        codeChallenge: null,
        codeChallengeMethod: null,
      };
    },

    async persist(authCode) {
      const challenge = s256Challenge(
        authCode.codeChallenge,
        authCode.codeChallengeMethod,
      );
      const user = authCode.user;
      if (user === null || user === undefined) {
        throw new TypeError(
          "createAuthCodeRepository: an authorization code needs a user",
        );
      }
      const client = authCode.client;
      await store.put({
        code: authCode.code,
        expiresAt: Math.floor(authCode.expiresAt.getTime() / 1000),
        data: {
          clientId: client.id,
          subject: String(user.id),
          redirectUri: authCode.redirectUri ?? "",
          scope: authCode.scopes.map((scope) => scope.name),
          codeChallenge: challenge,
          codeChallengeMethod: "S256",
          context: {
            client: pick(client, CLIENT_FIELDS),
            clientScopes: (client.scopes ?? []).map((scope) => scope?.name),
            userId: user.id,
          } as JsonObject,
        },
      });
    },

    async isRevoked(id) {
      sweep();
      const taken = handover.get(id);
      // Opaque codes: the second call of the request whose getByIdentifier
      // took it.
      if (taken?.by === "getByIdentifier") {
        handOver(id);
        return false;
      }
      // JWT codes: the first call. A code another request's isRevoked
      // holds is spent.
      return taken !== undefined ||
        await take(id, "isRevoked") === undefined;
    },

    async revoke(id) {
      // After a redemption: nothing left to do. Otherwise (the revocation
      // endpoint, RFC 7009): the code is spent now.
      if (handover.delete(id) || redeemed.delete(id)) return;
      await store.take(id);
    },
  };
}
