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
 * The longest code the store accepts. RFC 6749 leaves the size to the
 * server (§4.1.2: "The authorization server SHOULD document the size of any
 * value it issues"); real codes are 22 to 86 characters.
 */
export const MAX_CODE_LENGTH = 512;

/**
 * Whether `code` is a string an authorization server could have issued:
 * 1 to {@linkcode MAX_CODE_LENGTH} VSCHAR characters (RFC 6749 Appendix
 * A.11). Anything else (empty, huge, NUL, non-ASCII, lone surrogates) can
 * never be stored, so it can never be redeemed.
 */
export function isCodeSyntax(code: string): boolean {
  return code.length <= MAX_CODE_LENGTH && VSCHAR.test(code);
}
