/**
 * What the server adapters share: the store check, the PKCE rule, codes
 * drawn for servers that let the repository choose them, and the fields of
 * an application's objects (clients, users, scopes) that a code keeps.
 *
 * @module
 */

import { PkceRequiredError } from "../errors.ts";
import { base64url } from "../_platform.ts";
import type { CodeStore } from "../store.ts";

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
    throw new PkceRequiredError();
  }
  return challenge;
}

/** A fresh code of 256 bits, base64url (43 characters). */
export function newCode(): string {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

/**
 * The fields named in `keys` of an application's object (a client, a
 * user, a scope), and nothing else: an allowlist, so that no secret, under
 * whatever name or however deep, is copied into a code's record. Absent
 * and `undefined` fields are left out; the store validates the values as
 * JSON (a value that is not JSON is refused, never dropped).
 */
export function pick(
  value: unknown,
  keys: readonly string[],
): Record<string, unknown> {
  const copy: Record<string, unknown> = {};
  if (typeof value === "object" && value !== null) {
    for (const key of keys) {
      // Read as the server reads it (a getter of an ORM entity counts).
      const member = (value as Record<string, unknown>)[key];
      if (member !== undefined) copy[key] = member;
    }
  }
  return copy;
}

/** Whether the entry's expiry (epoch seconds) has passed. */
export function isExpired(expiresAt: number): boolean {
  return expiresAt <= Date.now() / 1000;
}
