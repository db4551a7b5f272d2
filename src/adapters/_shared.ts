/**
 * What the server adapters share: the store check, the PKCE rule, codes
 * drawn for servers that let the repository choose them, and copies of a
 * server's objects without their secrets.
 *
 * @module
 */

import { PkceRequiredError } from "../errors.ts";
import { base64url } from "../_platform.ts";
import type { CodeStore } from "../store.ts";
import type { JsonObject } from "../types.ts";

/**
 * Checks that `store` is a code store: `put`, `take`, `spent`, and the
 * `also` methods an adapter needs besides.
 *
 * @throws {TypeError} If it is not.
 */
export function checkStore(
  store: unknown,
  adapter: string,
  also: readonly (keyof CodeStore)[] = [],
): CodeStore {
  const s = store as Partial<CodeStore> | null | undefined;
  for (const method of ["put", "take", "spent", ...also] as const) {
    if (typeof s?.[method] !== "function") {
      throw new TypeError(`${adapter}: store must be a code store`);
    }
  }
  return s as CodeStore;
}

/**
 * The S256 challenge of a code the server is issuing (RFC 7636 §4.2).
 *
 * @throws {PkceRequiredError} If the code has no challenge, or its method
 * is not `S256`.
 */
export function s256Challenge(challenge: unknown, method: unknown): string {
  if (typeof challenge !== "string" || challenge === "" || method !== "S256") {
    throw new PkceRequiredError(PKCE_REQUIRED);
  }
  return challenge;
}

/** The message of the adapters' {@linkcode PkceRequiredError}. */
const PKCE_REQUIRED =
  "invalid_request: PKCE with S256 is required (RFC 7636): the " +
  "authorization code was not stored";

/** A fresh code of 256 bits, base64url (43 characters). */
export function newCode(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

/**
 * Keys never copied from a server's client or user object into the store:
 * a code's record is no place for a secret.
 */
const SECRET_KEYS = new Set([
  "secret",
  "clientSecret",
  "client_secret",
  "password",
  "passwordHash",
  "password_hash",
]);

/**
 * A JSON copy of `value` without the keys of {@linkcode SECRET_KEYS} at
 * its top level and without `undefined` members.
 */
export function withoutSecrets(value: unknown): JsonObject {
  const copy: Record<string, unknown> = {};
  if (typeof value === "object" && value !== null) {
    for (const [key, member] of Object.entries(value)) {
      if (!SECRET_KEYS.has(key) && member !== undefined) copy[key] = member;
    }
  }
  return copy as JsonObject;
}

/** Whether the entry's expiry (epoch seconds) has passed. */
export function isExpired(expiresAt: number): boolean {
  return expiresAt <= Date.now() / 1000;
}
