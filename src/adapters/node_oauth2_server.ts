/**
 * The authorization-code methods of an `@node-oauth/oauth2-server` (5.x)
 * model, on the code store, so that each code is redeemed exactly once.
 *
 * The library's token endpoint calls the model's `getAuthorizationCode`,
 * then `revokeAuthorizationCode`, with awaits between: with the common
 * model (a read, then a delete that reports success), concurrent token
 * requests with one code all pass the read and all get tokens. Here
 * `getAuthorizationCode` is the store's atomic `take`: of any number of
 * concurrent requests, in any number of processes, exactly one gets the
 * code, and `revokeAuthorizationCode` is `true` for that one request and
 * `false` for every other. The module does not depend on the library: a
 * model is plain methods.
 *
 * @example Spread it into your model
 * ```ts ignore
 * import process from "node:process";
 * import OAuth2Server from "@node-oauth/oauth2-server";
 * import postgres from "postgres";
 * import { createCodeStore } from "@attesto/code-store";
 * import { createCodeStoreModel } from "@attesto/code-store/node-oauth2-server";
 *
 * const sql = postgres(process.env.DATABASE_URL!, { fetch_types: false });
 * const oauth = new OAuth2Server({
 *   model: {
 *     ...yourModel, // getClient, saveToken, getAccessToken...
 *     ...createCodeStoreModel(createCodeStore(sql)),
 *   },
 * });
 * ```
 *
 * @module
 */

import { checkStore, s256Challenge } from "./_shared.ts";
import { PkceRequiredError } from "../errors.ts";
import type { CodeStore } from "../store.ts";
import type { JsonObject } from "../types.ts";

export { PkceRequiredError };

/** A client, as the library's model hands it over (`Client`). */
export interface NodeOAuth2Client {
  /** The client's id. */
  readonly id: string;
  /** Everything else the model's `getClient` returned. */
  readonly [key: string]: unknown;
}

/** A user, as the library's model hands it over (`User`). */
export interface NodeOAuth2User {
  /** Whatever the model's user holds (by default its `id` is the subject). */
  readonly [key: string]: unknown;
}

/** The code the library asks the model to save. */
export interface NodeOAuth2NewCode {
  /** The code. */
  readonly authorizationCode: string;
  /** When it expires. */
  readonly expiresAt: Date;
  /** The redirect URI of the authorization request. */
  readonly redirectUri: string;
  /** The granted scope. */
  readonly scope?: readonly string[] | undefined;
  /** The PKCE challenge (required, with `S256`). */
  readonly codeChallenge?: string | undefined;
  /** The PKCE method. */
  readonly codeChallengeMethod?: string | undefined;
  /** Anything else the library or the caller adds. */
  readonly [key: string]: unknown;
}

/** An authorization code, as the library takes it from the model (`AuthorizationCode`). */
export interface NodeOAuth2AuthorizationCode extends NodeOAuth2NewCode {
  /** The client it was issued to. */
  readonly client: NodeOAuth2Client;
  /** The user who granted it. */
  readonly user: NodeOAuth2User;
}

/** The model methods {@linkcode createCodeStoreModel} returns. */
export interface CodeStoreModel {
  /**
   * Stores a code issued at the authorization endpoint (`put`).
   *
   * @throws {PkceRequiredError} If the code has no S256 challenge; nothing
   * is stored.
   */
  saveAuthorizationCode(
    code: NodeOAuth2NewCode,
    client: NodeOAuth2Client,
    user: NodeOAuth2User,
  ): Promise<NodeOAuth2AuthorizationCode>;
  /**
   * Redeems a code presented at the token endpoint (`take`): the code, for
   * exactly one request; `false` for every other (unknown, or spent). An
   * expired code is spent and returned; the library refuses it.
   */
  getAuthorizationCode(
    authorizationCode: string,
  ): Promise<NodeOAuth2AuthorizationCode | false>;
  /**
   * `true` for the code object this model's `getAuthorizationCode`
   * returned (once), `false` for any other: the code was already deleted
   * when it was taken.
   */
  revokeAuthorizationCode(code: NodeOAuth2AuthorizationCode): Promise<boolean>;
}

/** Options for {@linkcode createCodeStoreModel}. */
export interface CodeStoreModelOptions {
  /**
   * The store's `subject` for a user (default: its `id`, as a string). Of
   * the user, only its `id` is kept (or, if it has none, the subject), and
   * the code's user comes back as `{ id }`.
   */
  readonly subject?: ((user: NodeOAuth2User) => string) | undefined;
}

/**
 * Creates the authorization-code methods of an `@node-oauth/oauth2-server`
 * model on `store`, to spread into the rest of your model.
 *
 * Client id, user (as `subject`), redirect URI, scope, PKCE and expiry go
 * to the store's fields. Of the client and the user the code keeps their
 * ids and nothing else, whatever other fields (secrets, password hashes)
 * they hold: the library reads back only `client.id` (checked against the
 * authenticated client, whose own object it then uses) and hands the
 * code's `user` to your model's `validateScope`, `generateAccessToken` and
 * `saveToken`, which get it as `{ id }` (the user's own `id`, string or
 * number, or the subject if it had none). A code without an S256 challenge
 * is refused ({@linkcode PkceRequiredError}): have the authorization
 * request require `code_challenge` with `code_challenge_method=S256` (the
 * library rejects `plain` unless `enablePlainPKCE` is set).
 *
 * @param store The code store.
 * @param options How a user becomes the store's subject.
 * @returns `saveAuthorizationCode`, `getAuthorizationCode` and
 * `revokeAuthorizationCode`.
 * @throws {TypeError} If `store` is not a code store.
 *
 * @example
 * ```ts
 * import { createMemoryCodeStore } from "@attesto/code-store/memory";
 * import { createCodeStoreModel } from "@attesto/code-store/node-oauth2-server";
 * import { assertEquals } from "@std/assert";
 *
 * const model = createCodeStoreModel(createMemoryCodeStore());
 * const client = { id: "s6BhdRkqt3", grants: ["authorization_code"] };
 * await model.saveAuthorizationCode({
 *   authorizationCode: "SplxlOBeZQQYbYS6WxSbIA",
 *   expiresAt: new Date(Date.now() + 60_000),
 *   redirectUri: "https://client.example.org/cb",
 *   scope: ["read"],
 *   codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
 *   codeChallengeMethod: "S256",
 * }, client, { id: "user-42", passwordHash: "never stored" });
 *
 * const code = await model.getAuthorizationCode("SplxlOBeZQQYbYS6WxSbIA");
 * assertEquals(code && code.user, { id: "user-42" });
 * assertEquals(code && await model.revokeAuthorizationCode(code), true);
 * assertEquals(await model.getAuthorizationCode("SplxlOBeZQQYbYS6WxSbIA"), false);
 * ```
 */
export function createCodeStoreModel(
  store: CodeStore,
  options: CodeStoreModelOptions = {},
): CodeStoreModel {
  checkStore(store, "createCodeStoreModel");
  const subjectOf = options.subject ?? ((user: NodeOAuth2User) => {
    const id = user?.id;
    if (typeof id !== "string" && typeof id !== "number") {
      throw new TypeError(
        "createCodeStoreModel: the user has no id; pass options.subject",
      );
    }
    return String(id);
  });
  // The code objects this model handed out, each revocable once.
  const taken = new WeakSet<object>();

  return {
    async saveAuthorizationCode(code, client, user) {
      const challenge = s256Challenge(
        code.codeChallenge,
        code.codeChallengeMethod,
      );
      const id = user?.id;
      const context: JsonObject = typeof id === "string" ||
          typeof id === "number"
        ? { userId: id }
        : {};
      await store.put({
        code: code.authorizationCode,
        expiresAt: Math.floor(code.expiresAt.getTime() / 1000),
        data: {
          clientId: client.id,
          subject: subjectOf(user),
          redirectUri: code.redirectUri,
          scope: [...(code.scope ?? [])],
          codeChallenge: challenge,
          codeChallengeMethod: "S256",
          context,
        },
      });
      return { ...code, client, user };
    },

    async getAuthorizationCode(authorizationCode) {
      const entry = await store.take(authorizationCode);
      if (entry === null) return false;
      const { data } = entry;
      const { userId } = data.context as { userId?: string | number };
      const code: NodeOAuth2AuthorizationCode = {
        authorizationCode,
        expiresAt: new Date(entry.expiresAt * 1000),
        redirectUri: data.redirectUri,
        scope: [...data.scope],
        codeChallenge: data.codeChallenge,
        codeChallengeMethod: data.codeChallengeMethod,
        client: { id: data.clientId },
        user: { id: userId ?? data.subject },
      };
      taken.add(code);
      return code;
    },

    // deno-lint-ignore require-await
    async revokeAuthorizationCode(code) {
      return taken.delete(code);
    },
  };
}

/**
 * The former name of {@linkcode createCodeStoreModel}.
 *
 * @deprecated Use {@linkcode createCodeStoreModel}, the same factory
 * under the `create*` name every other factory has. This alias is kept for
 * one minor version.
 *
 * @param store The code store.
 * @param options How a user becomes the store's subject.
 * @returns The same as {@linkcode createCodeStoreModel}.
 *
 * @example
 * ```ts
 * import { createMemoryCodeStore } from "@attesto/code-store/memory";
 * import { codeStoreModel } from "@attesto/code-store/node-oauth2-server";
 * import { assertEquals } from "@std/assert";
 *
 * const model = codeStoreModel(createMemoryCodeStore());
 * assertEquals(typeof model.getAuthorizationCode, "function");
 * ```
 */
export function codeStoreModel(
  store: CodeStore,
  options: CodeStoreModelOptions = {},
): CodeStoreModel {
  return createCodeStoreModel(store, options);
}
