/**
 * PKCE with S256 (RFC 7636), the one check that makes a stolen code
 * useless: the token endpoint recomputes the challenge from the verifier the
 * client presents. The examples' single copy of it.
 *
 * @module
 */

import { crypto } from "@std/crypto/crypto";
import { timingSafeEqual } from "@std/crypto/timing-safe-equal";

// RFC 7636 §4.1: code-verifier = 43*128unreserved.
const VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/;
// §4.2: an S256 challenge is BASE64URL(SHA256(...)): 43 characters.
const CHALLENGE = /^[A-Za-z0-9_-]{43}$/;

/** A fresh code verifier: 32 random bytes, base64url (43 characters). */
export function newVerifier(): string {
  return crypto.getRandomValues(new Uint8Array(32)).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
}

/** RFC 7636 §4.2: `BASE64URL(SHA256(ASCII(code_verifier)))`. */
export function s256(verifier: string): string {
  const digest = crypto.subtle.digestSync(
    "SHA-256",
    new TextEncoder().encode(verifier),
  );
  return new Uint8Array(digest).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
}

/** Whether `challenge` can be an S256 code challenge (RFC 7636 §4.2). */
export function isS256Challenge(challenge: string): boolean {
  return CHALLENGE.test(challenge);
}

/**
 * RFC 7636 §4.6: whether `verifier` is a well-formed code verifier whose S256
 * transform is `challenge`, compared in constant time.
 */
export function pkceMatches(verifier: string, challenge: string): boolean {
  if (!VERIFIER.test(verifier) || !isS256Challenge(challenge)) return false;
  const encoder = new TextEncoder();
  return timingSafeEqual(
    encoder.encode(s256(verifier)),
    encoder.encode(challenge),
  );
}
