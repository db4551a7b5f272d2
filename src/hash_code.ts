/**
 * The hash the store keys an authorization code by.
 *
 * @module
 */

import { crypto } from "@std/crypto/crypto";
import { isCodeSyntax } from "./_grammar.ts";
import { base64url } from "./_platform.ts";

/**
 * The hash of a code presented for redemption, or `undefined` for a string
 * no server could have issued (see {@linkcode isCodeSyntax}), which needs
 * no lookup.
 *
 * @throws {TypeError} If `code` is not a string.
 */
export function presentedHash(code: unknown): string | undefined {
  if (typeof code !== "string") {
    throw new TypeError("the authorization code must be a string");
  }
  return isCodeSyntax(code) ? hashCode(code) : undefined;
}

const encoder = new TextEncoder();
// Codes are ASCII (VSCHAR): encoding one into a reused buffer costs less
// than a TextEncoder call, which crosses into the runtime.
const scratch = new Uint8Array(new ArrayBuffer(1024));

/** The UTF-8 bytes of `text`: a view of a reused buffer for short ASCII. */
function utf8(text: string): Uint8Array<ArrayBuffer> {
  const length = text.length;
  if (length > scratch.length) return encoder.encode(text);
  for (let i = 0; i < length; i++) {
    const unit = text.charCodeAt(i);
    if (unit > 0x7f) return encoder.encode(text);
    scratch[i] = unit;
  }
  return scratch.subarray(0, length);
}

/**
 * Hashes an authorization code the way the store keys it: SHA-256 over the
 * UTF-8 bytes of the code, encoded as base64url without padding (RFC 4648
 * §5). The result is always 43 characters.
 *
 * Codes are high-entropy random strings, so a fast unsalted hash is the
 * right tool: it lets a single indexed lookup find the entry, and a leaked
 * table holds nothing that can be redeemed. The digest is computed
 * synchronously by `@std/crypto`'s `crypto.subtle.digestSync`, on the
 * calling thread (Web Crypto's `digest` runs on a thread pool in Deno,
 * a thread hop per code).
 *
 * @param code The plaintext code.
 * @returns The base64url hash, 43 characters.
 * @throws {TypeError} If `code` is not a string.
 *
 * @example
 * ```ts
 * import { hashCode } from "@attesto/code-store";
 * import { assertEquals } from "@std/assert";
 *
 * assertEquals(hashCode("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
 * ```
 */
export function hashCode(code: string): string {
  if (typeof code !== "string") {
    throw new TypeError("the authorization code must be a string");
  }
  const digest = crypto.subtle.digestSync("SHA-256", utf8(code));
  return base64url(new Uint8Array(digest));
}
