/**
 * An OpenAuth (`@openauthjs/openauth` 0.4) `StorageAdapter` whose
 * authorization codes live in the code store, so that each code is
 * redeemed exactly once.
 *
 * OpenAuth's `/token` endpoint reads a code (`Storage.get(["oauth:code",
 * code])`), removes it, and checks it, with awaits between: concurrent
 * token requests with one code all pass the read, and each gets tokens.
 * Here reading a code is the store's atomic `take`: of any number of
 * concurrent requests, in any number of processes, exactly one gets it.
 * Every other key (refresh tokens, signing keys, ...) goes to `fallback`,
 * your own OpenAuth storage. The module does not depend on OpenAuth: a
 * storage adapter is plain methods.
 *
 * @example Give it to the issuer
 * ```ts ignore
 * import process from "node:process";
 * import { issuer } from "@openauthjs/openauth";
 * import { MemoryStorage } from "@openauthjs/openauth/storage/memory";
 * import postgres from "postgres";
 * import { createCodeStore } from "@attesto/code-store";
 * import { createOpenAuthStorage } from "@attesto/code-store/openauth";
 *
 * const sql = postgres(process.env.DATABASE_URL!, { fetch_types: false });
 * const app = issuer({
 *   storage: createOpenAuthStorage(createCodeStore(sql), {
 *     fallback: yourSharedStorage, // e.g. DynamoStorage(...)
 *   }),
 *   providers,
 *   subjects,
 *   success,
 * });
 * ```
 *
 * @module
 */

import { checkStore, isExpired, s256Challenge } from "./_shared.ts";
import { PkceRequiredError } from "../errors.ts";
import type { CodeStore } from "../store.ts";
import type { JsonObject } from "../types.ts";

export { PkceRequiredError };

/** OpenAuth's storage contract (`StorageAdapter`). */
export interface OpenAuthStorageAdapter {
  /** The value stored at `key`, if any. */
  get(key: string[]): Promise<Record<string, unknown> | undefined>;
  /** Deletes the value at `key`. */
  remove(key: string[]): Promise<void>;
  /** Stores `value` at `key`, until `expiry`. */
  set(key: string[], value: unknown, expiry?: Date): Promise<void>;
  /** Every entry whose key starts with `prefix`. */
  scan(prefix: string[]): AsyncIterable<[string[], unknown]>;
}

/** Options for {@linkcode createOpenAuthStorage}. */
export interface OpenAuthStorageOptions {
  /**
   * The storage of every key but authorization codes. With several
   * processes it must be shared too (not `MemoryStorage`).
   */
  readonly fallback: OpenAuthStorageAdapter;
}

/** The first key part of OpenAuth's authorization codes. */
const CODE = "oauth:code";

/** The fields of OpenAuth's code value that map to the store's own. */
interface CodeValue {
  readonly subject?: unknown;
  readonly redirectURI?: unknown;
  readonly clientID?: unknown;
  readonly pkce?: { readonly challenge?: unknown; readonly method?: unknown };
  readonly [key: string]: unknown;
}

/**
 * Creates an OpenAuth storage adapter: keys `["oauth:code", code]` go to
 * `store` (`set` is `put`, `get` is the atomic `take`, `remove` is a no-op
 * since the code was deleted when it was taken, and `scan` lists no code),
 * every other key to `options.fallback`.
 *
 * OpenAuth trusts its storage to drop expired codes, and the store returns
 * an expired entry: `get` answers `undefined` for it (it is spent all the
 * same). The code's value is kept without loss: subject, client, redirect
 * URI and PKCE go to the store's fields, the rest (`type`, `properties`,
 * `ttl`) into `context`. A code without an S256 challenge is refused
 * ({@linkcode PkceRequiredError}): create the client with `pkce: true`
 * (`client.authorize(redirectURI, "code", { pkce: true })`).
 *
 * @param store The code store.
 * @param options The storage of every other key.
 * @returns The storage adapter, for `issuer({ storage })`.
 * @throws {TypeError} If `store` is not a code store or `fallback` not a
 * storage adapter.
 *
 * @example
 * ```ts
 * import { createMemoryCodeStore } from "@attesto/code-store/memory";
 * import { createOpenAuthStorage } from "@attesto/code-store/openauth";
 * import { assertEquals } from "@std/assert";
 *
 * const others = new Map<string, unknown>();
 * const storage = createOpenAuthStorage(createMemoryCodeStore(), {
 *   fallback: {
 *     get: async (key) => others.get(key.join("/")) as Record<string, unknown>,
 *     set: async (key, value) => void others.set(key.join("/"), value),
 *     remove: async (key) => void others.delete(key.join("/")),
 *     scan: async function* () {},
 *   },
 * });
 * const key = ["oauth:code", crypto.randomUUID()];
 * await storage.set(key, {
 *   type: "user",
 *   properties: { id: "42" },
 *   subject: "user:42",
 *   redirectURI: "https://client.example.org/cb",
 *   clientID: "s6BhdRkqt3",
 *   pkce: {
 *     challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
 *     method: "S256",
 *   },
 * }, new Date(Date.now() + 60_000));
 * assertEquals((await storage.get(key))?.subject, "user:42");
 * assertEquals(await storage.get(key), undefined); // spent
 * ```
 */
export function createOpenAuthStorage(
  store: CodeStore,
  options: OpenAuthStorageOptions,
): OpenAuthStorageAdapter {
  checkStore(store, "createOpenAuthStorage");
  const fallback = options?.fallback;
  if (
    typeof fallback?.get !== "function" ||
    typeof fallback.set !== "function" ||
    typeof fallback.remove !== "function" ||
    typeof fallback.scan !== "function"
  ) {
    throw new TypeError(
      "createOpenAuthStorage: options.fallback must be an OpenAuth storage " +
        "adapter (get, set, remove, scan)",
    );
  }
  const isCode = (key: string[]) => key.length === 2 && key[0] === CODE;

  return {
    async get(key) {
      if (!isCode(key)) return await fallback.get(key);
      const entry = await store.take(key[1]!);
      if (entry === null || isExpired(entry.expiresAt)) return undefined;
      const { data } = entry;
      const { pkce, ...context } = data.context as {
        pkce?: JsonObject;
        [key: string]: unknown;
      };
      return {
        ...context,
        subject: data.subject,
        redirectURI: data.redirectUri,
        clientID: data.clientId,
        pkce: {
          ...pkce,
          challenge: data.codeChallenge,
          method: data.codeChallengeMethod,
        },
      };
    },

    async set(key, value, expiry) {
      if (!isCode(key)) return await fallback.set(key, value, expiry);
      if (!(expiry instanceof Date)) {
        throw new TypeError(
          "createOpenAuthStorage: an authorization code needs an expiry",
        );
      }
      const { subject, redirectURI, clientID, pkce, ...rest } =
        (value ?? {}) as CodeValue;
      const challenge = s256Challenge(pkce?.challenge, pkce?.method);
      const { challenge: _c, method: _m, ...pkceRest } = pkce ?? {};
      const context: Record<string, unknown> = { ...rest };
      if (Object.keys(pkceRest).length > 0) {
        context.pkce = pkceRest;
      }
      await store.put({
        code: key[1]!,
        expiresAt: Math.floor(expiry.getTime() / 1000),
        data: {
          clientId: clientID as string,
          subject: subject as string,
          redirectUri: redirectURI as string,
          scope: [],
          codeChallenge: challenge,
          codeChallengeMethod: "S256",
          context: context as JsonObject,
        },
      });
    },

    async remove(key) {
      // A code was deleted when it was taken.
      if (!isCode(key)) await fallback.remove(key);
    },

    async *scan(prefix) {
      // Codes are stored only as hashes: there is nothing to list.
      if (prefix[0] === CODE) return;
      yield* fallback.scan(prefix);
    },
  };
}
