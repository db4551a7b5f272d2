/**
 * The records the store writes and returns.
 *
 * @module
 */

/** A JSON value, as stored in a `jsonb` column. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | readonly JsonValue[]
  | JsonObject;

/** A JSON object. */
export type JsonObject = { readonly [key: string]: JsonValue };

/**
 * What an authorization code is issued for, as `put` takes it: everything
 * the token endpoint needs to re-check the redemption (RFC 6749 §4.1.3,
 * RFC 7636 §4.6) and to mint the tokens.
 *
 * Unknown keys are rejected, never dropped. `take` returns the grant as
 * {@linkcode StoredGrantData}, every optional field filled in.
 */
export interface GrantData {
  /** The client the code was issued to (RFC 6749 §2.2): a non-empty VSCHAR string. */
  readonly clientId: string;
  /** The resource owner (the end-user's identifier): a non-empty string. */
  readonly subject: string;
  /** The `redirect_uri` of the authorization request (RFC 6749 §4.1.3): an absolute URI without fragment. */
  readonly redirectUri: string;
  /** The granted scope tokens (RFC 6749 §3.3); may be empty. */
  readonly scope: readonly string[];
  /** The PKCE `code_challenge` (RFC 7636 §4.2): `BASE64URL(SHA256(code_verifier))`, 43 characters. */
  readonly codeChallenge: string;
  /** The PKCE method. Only `"S256"` is accepted; `"plain"` is never defaulted to (RFC 7636 §4.2, §7.2). */
  readonly codeChallengeMethod: "S256";
  /** The OpenID Connect `nonce` of the request, if any. */
  readonly nonce?: string | null;
  /** The DPoP key's JWK thumbprint (`dpop_jkt`, RFC 9449 §10), if the code is bound to a key. */
  readonly dpopJkt?: string | null;
  /** Extra claims for the tokens (a JSON object), if any. */
  readonly claims?: JsonObject;
  /** The RFC 8707 resource indicators (absolute URIs without fragment), if any. */
  readonly resource?: readonly string[];
  /**
   * The caller's identifier of the grant (or token family) the code starts,
   * if any: recorded in the code's tombstone when it is redeemed, so a
   * replay can revoke the tokens issued from it (RFC 6749 §4.1.2, §10.5).
   * 1 to 1,024 characters of well-formed Unicode without control
   * characters (C0, DEL, C1): the rule `revokeGrant` applies too.
   */
  readonly grantId?: string | null;
  /**
   * Anything else the token endpoint needs from the authorization request
   * (a JSON object), such as an OpenID provider's `acr`, `amr`, `authTime`,
   * `sid` or session binding. Validated as JSON, within bounds.
   */
  readonly context?: JsonObject;
}

/**
 * A grant as `take` returns it: {@linkcode GrantData} with every optional
 * field filled in (`nonce`, `dpopJkt` and `grantId` `null`, `claims` and
 * `context` `{}`, `resource` `[]` when they were not given).
 */
export interface StoredGrantData extends GrantData {
  /** The OpenID Connect `nonce`, or `null`. */
  readonly nonce: string | null;
  /** The DPoP key's JWK thumbprint, or `null`. */
  readonly dpopJkt: string | null;
  /** Extra claims for the tokens; `{}` when none were given. */
  readonly claims: JsonObject;
  /** The resource indicators; `[]` when none were given. */
  readonly resource: readonly string[];
  /** The grant identifier, or `null`. */
  readonly grantId: string | null;
  /** The context; `{}` when none was given. */
  readonly context: JsonObject;
}

/** The input of `put`: a freshly issued code and what it grants. */
export interface NewCode {
  /**
   * The plaintext authorization code, as handed to the client: 16 to 512
   * VSCHAR characters (RFC 6749 Appendix A.11; §10.10 asks that a code be
   * guessed with a probability of at most 2^-128, which a 16-character
   * floor cannot prove but which refuses a test code). Only its SHA-256
   * hash is stored.
   */
  readonly code: string;
  /**
   * What the code grants: at most 64 KiB, measured as the UTF-8 bytes of
   * `JSON.stringify` of the grant as validated (optional fields filled in,
   * as `take` returns it).
   */
  readonly data: GrantData;
  /** When the code expires, in integer seconds since the Unix epoch. */
  readonly expiresAt: number;
}

/** A stored code, as `take` returns it. */
export interface CodeEntry {
  /** The base64url SHA-256 hash of the code (see `hashCode`). */
  readonly codeHash: string;
  /** What the code grants, every optional field filled in. */
  readonly data: StoredGrantData;
  /** When the code expires, in integer seconds since the Unix epoch. */
  readonly expiresAt: number;
}

/**
 * A code's record as `fromRecord` takes it: a {@linkcode CodeEntry} whose
 * grant's optional fields may be left out.
 */
export interface CodeRecord {
  /** The base64url SHA-256 hash of the code (see `hashCode`). */
  readonly codeHash: string;
  /** What the code grants. */
  readonly data: GrantData;
  /** When the code expires, in integer seconds since the Unix epoch. */
  readonly expiresAt: number;
}

/**
 * The tombstone of a redeemed code: what a token endpoint needs to revoke
 * the tokens issued from it when the code is presented again (RFC 6749
 * §4.1.2: "If an authorization code is used more than once, the
 * authorization server MUST deny the request and SHOULD revoke (when
 * possible) all tokens previously issued based on that authorization
 * code"). It holds nothing secret beyond what the code's row held.
 */
export interface SpentCode {
  /** The base64url SHA-256 hash of the code. */
  readonly codeHash: string;
  /** The client the code was issued to. */
  readonly clientId: string;
  /** The resource owner. */
  readonly subject: string;
  /** The `redirectUri` the code was issued for. */
  readonly redirectUri: string;
  /**
   * The PKCE `code_challenge` of the code: with it, a replay can be checked
   * against the `code_verifier` it presents (RFC 7636 §4.6) before tokens are
   * revoked.
   */
  readonly codeChallenge: string;
  /** The `grantId` given at `put`, or `null`. */
  readonly grantId: string | null;
  /** When the code was redeemed, in integer seconds since the Unix epoch. */
  readonly spentAt: number;
}
