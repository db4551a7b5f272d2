/**
 * The grammars of the values the store keeps, each defined once, from the
 * RFCs they come from.
 *
 * @module
 */

/** RFC 6749 Appendix A: `VSCHAR = %x20-7E` (a code, §A.11; a `client_id`, §2.2). */
export const VSCHAR: RegExp = /^[\x20-\x7E]+$/;

/** RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`. */
export const SCOPE_TOKEN: RegExp = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

/**
 * 32 bytes in base64url without padding (RFC 4648 §5): a code hash, an S256
 * code challenge (RFC 7636 §4.2) or a SHA-256 JWK thumbprint (RFC 7638,
 * RFC 9449 §10). Its source is also the tables' CHECK constraint.
 */
export const SHA256_BASE64URL: RegExp = /^[A-Za-z0-9_-]{43}$/;

/**
 * The shortest code the store accepts. RFC 6749 §10.10 asks that the
 * probability of guessing a code be at most 2^-128 (and §10.12 says the
 * same of a `state` value); a length floor cannot prove that, but it
 * refuses the obvious mistakes, such as a test code reaching production.
 * Real servers' codes are 22 to 86 characters.
 */
export const MIN_CODE_LENGTH = 16;

/**
 * The longest code the store accepts. RFC 6749 leaves the size to the
 * server (§4.1.2: "The authorization server SHOULD document the size of any
 * value it issues"); real codes are 22 to 86 characters.
 */
export const MAX_CODE_LENGTH = 512;

/**
 * Whether `code` is a string an authorization server could have issued:
 * {@linkcode MIN_CODE_LENGTH} to {@linkcode MAX_CODE_LENGTH} VSCHAR
 * characters (RFC 6749 Appendix A.11). Anything else (short, huge, NUL,
 * non-ASCII, lone surrogates) can never be stored, so it can never be
 * redeemed.
 */
export function isCodeSyntax(code: string): boolean {
  return code.length >= MIN_CODE_LENGTH && code.length <= MAX_CODE_LENGTH &&
    VSCHAR.test(code);
}

/** The longest grant identifier the store accepts (`put` and `revokeGrant`). */
export const MAX_GRANT_ID_LENGTH = 1024;

/**
 * A control character (Unicode category Cc): C0 (U+0000 to U+001F), DEL
 * (U+007F) or C1 (U+0080 to U+009F).
 */
export const CONTROL_CHARACTER: RegExp = /\p{Cc}/u;
