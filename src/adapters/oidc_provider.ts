/**
 * An adapter for panva's `oidc-provider` (9.x) that makes its token endpoint
 * redeem each authorization code exactly once.
 *
 * oidc-provider's token endpoint finds a code, checks that it was not
 * consumed, checks the rest, and only then consumes it, with awaits in
 * between and no lock: concurrent requests with one code can all pass, and
 * each gets tokens. With this adapter, finding an authorization code is the
 * store's atomic `take`: of any number of concurrent requests, in any number
 * of processes, exactly one finds the code; every other one finds its
 * tombstone, marked consumed, and oidc-provider's own reuse detection takes
 * it from there (an otherwise valid replay revokes the grant).
 *
 * Every other model goes to the adapter you give as `fallback`. The module
 * does not depend on oidc-provider: its adapter contract is plain methods.
 *
 * @example Wire it into a provider
 * ```ts ignore
 * import process from "node:process";
 * import Provider from "oidc-provider";
 * import postgres from "postgres";
 * import { createCodeStore, migrate } from "@attesto/code-store";
 * import { createOidcProviderAdapter } from "@attesto/code-store/oidc-provider";
 * import { PostgresAdapter } from "./your_adapter.ts"; // sessions, grants, tokens...
 *
 * const sql = postgres(process.env.DATABASE_URL!, { fetch_types: false });
 * await migrate(sql);
 * const provider = new Provider("https://op.example.com", {
 *   adapter: createOidcProviderAdapter(createCodeStore(sql), {
 *     fallback: PostgresAdapter,
 *   }),
 *   pkce: { required: () => true }, // the store refuses a code without S256
 *   // ...clients, findAccount, interactions
 * });
 * ```
 *
 * @module
 */

import { checkStore } from "./_shared.ts";
import { PkceRequiredError } from "../errors.ts";

export { PkceRequiredError };
import type { CodeStore } from "../store.ts";
import type { JsonObject, NewCode, StoredGrantData } from "../types.ts";

/** A model's payload, as oidc-provider hands it to and takes it from an adapter. */
export type OidcPayload = { readonly [key: string]: unknown };

/** oidc-provider's adapter contract, one instance per model. */
export interface OidcAdapter {
  /** Stores a model instance for `expiresIn` seconds. */
  upsert(id: string, payload: OidcPayload, expiresIn: number): Promise<void>;
  /** Finds an instance by its id. */
  find(id: string): Promise<OidcPayload | undefined | void>;
  /** Finds a device code by its user code. */
  findByUserCode(userCode: string): Promise<OidcPayload | undefined | void>;
  /** Finds a session by its uid. */
  findByUid(uid: string): Promise<OidcPayload | undefined | void>;
  /** Marks an instance consumed. */
  consume(id: string): Promise<void>;
  /** Deletes an instance. */
  destroy(id: string): Promise<void>;
  /** Deletes the instances of a grant. */
  revokeByGrantId(grantId: string): Promise<void>;
}

/** An adapter class, as oidc-provider accepts it: `new Adapter(model)`. */
export type OidcAdapterClass = new (model: string) => OidcAdapter;

/** An adapter factory, as oidc-provider accepts it: `adapter(model)`. */
export type OidcAdapterFactory = (model: string) => OidcAdapter;

/** Options for {@linkcode createOidcProviderAdapter}. */
export interface OidcProviderAdapterOptions {
  /**
   * The adapter of every model other than `AuthorizationCode` (sessions,
   * grants, tokens...), a class or a factory as oidc-provider accepts it.
   * With several processes it must be shared too (a database).
   */
  readonly fallback: OidcAdapterClass | OidcAdapterFactory;
}

/**
 * How long (seconds) the tombstone of a redeemed code, found again, stays
 * unexpired for oidc-provider: it checks expiry before `consumed`, so a
 * tombstone must look unexpired for a replay to revoke the grant.
 */
const TOMBSTONE_LIFETIME = 60;

/** The payload fields that map to the store's own fields. */
const MAPPED = new Set([
  "jti",
  "kind",
  "exp",
  "consumed",
  "clientId",
  "accountId",
  "redirectUri",
  "scope",
  "codeChallenge",
  "codeChallengeMethod",
  "nonce",
  "dpopJkt",
  "claims",
  "resource",
  "grantId",
]);

/**
 * Creates an oidc-provider adapter: `AuthorizationCode` goes to `store`
 * (`upsert` is `put`, `find` is the atomic `take`, a code already taken is
 * found as its tombstone with `consumed` set, `revokeByGrantId` deletes the
 * grant's live codes), every other model to `options.fallback`.
 *
 * Every field of the code's payload is kept: those the store has a place
 * for (client, account as `subject`, redirect URI, scope, PKCE, nonce,
 * DPoP key, `claims`, `resource`, grant) go there, and the others (`acr`,
 * `amr`, `authTime`, `sessionUid`, `expiresWithSession`, `sid`, `rar`, and
 * any oidc-provider adds) into the record's `context`, validated as JSON.
 *
 * The code is spent when it is first presented, before oidc-provider
 * checks the client, the redirect URI and PKCE, as the store's contract
 * says: a request that then fails has still used the code, and a later
 * correct retry is a replay, which revokes the grant.
 *
 * @param store The code store.
 * @param options The adapter of the other models.
 * @returns A factory, as oidc-provider's `adapter` option takes it.
 * @throws {TypeError} If `store` is not a code store or `fallback` is not
 * a class or a function.
 *
 * @example
 * ```ts
 * import { createMemoryCodeStore } from "@attesto/code-store/memory";
 * import { createOidcProviderAdapter } from "@attesto/code-store/oidc-provider";
 * import { assertEquals } from "@std/assert";
 *
 * class Other {
 *   constructor(readonly model: string) {}
 *   upsert() { return Promise.resolve(); }
 *   find() { return Promise.resolve(undefined); }
 *   findByUserCode() { return Promise.resolve(undefined); }
 *   findByUid() { return Promise.resolve(undefined); }
 *   consume() { return Promise.resolve(); }
 *   destroy() { return Promise.resolve(); }
 *   revokeByGrantId() { return Promise.resolve(); }
 * }
 * const adapter = createOidcProviderAdapter(createMemoryCodeStore(), {
 *   fallback: Other,
 * });
 * const codes = adapter("AuthorizationCode");
 * await codes.upsert("SplxlOBeZQQYbYS6WxSbIA", {
 *   iat: 1_900_000_000,
 *   exp: 1_900_000_060,
 *   kind: "AuthorizationCode",
 *   jti: "SplxlOBeZQQYbYS6WxSbIA",
 *   clientId: "client",
 *   accountId: "user-42",
 *   redirectUri: "https://client.example.org/cb",
 *   scope: "openid profile",
 *   codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
 *   codeChallengeMethod: "S256",
 *   grantId: "grant-1",
 *   acr: "urn:mace:incommon:iap:silver",
 * }, 60);
 * const found = await codes.find("SplxlOBeZQQYbYS6WxSbIA");
 * assertEquals(found?.scope, "openid profile");
 * assertEquals(found?.acr, "urn:mace:incommon:iap:silver");
 * const again = await codes.find("SplxlOBeZQQYbYS6WxSbIA");
 * assertEquals(typeof again?.consumed, "number"); // its tombstone
 * ```
 */
export function createOidcProviderAdapter(
  store: CodeStore,
  options: OidcProviderAdapterOptions,
): OidcAdapterFactory {
  checkStore(store, "createOidcProviderAdapter", ["revokeGrant"]);
  const { fallback } = options ?? {};
  if (typeof fallback !== "function") {
    throw new TypeError(
      "options.fallback must be the adapter of the other models: a class " +
        "or a factory, as oidc-provider takes it",
    );
  }
  // As oidc-provider tells them apart: a class has a prototype object (an
  // arrow function has none).
  const constructable = typeof fallback.prototype === "object" &&
    fallback.prototype !== null;
  const codes = codeAdapter(store);
  // An arrow function: oidc-provider calls it as a factory.
  return (model: string) =>
    model === "AuthorizationCode"
      ? codes
      : constructable
      ? new (fallback as OidcAdapterClass)(model)
      : (fallback as OidcAdapterFactory)(model);
}

function codeAdapter(store: CodeStore): OidcAdapter {
  return {
    async upsert(id, payload) {
      await store.put(newCode(id, payload));
    },
    async find(id) {
      const entry = await store.take(id);
      if (entry) return payloadOf(id, entry.data, entry.expiresAt);
      const spent = await store.spent(id);
      if (!spent) return undefined;
      // What oidc-provider's reuse path reads: unexpired, consumed, with the
      // client, grant, redirect URI and PKCE challenge it checks first.
      return {
        jti: id,
        kind: "AuthorizationCode",
        iat: spent.spentAt,
        exp: Math.floor(Date.now() / 1000) + TOMBSTONE_LIFETIME,
        consumed: spent.spentAt,
        clientId: spent.clientId,
        accountId: spent.subject,
        redirectUri: spent.redirectUri,
        codeChallenge: spent.codeChallenge,
        codeChallengeMethod: "S256",
        ...(spent.grantId === null ? {} : { grantId: spent.grantId }),
      };
    },
    findByUserCode: () => Promise.resolve(undefined),
    findByUid: () => Promise.resolve(undefined),
    // find() already spent the code.
    consume: () => Promise.resolve(),
    async destroy(id) {
      await store.take(id);
    },
    async revokeByGrantId(grantId) {
      await store.revokeGrant(grantId);
    },
  };
}

/** The store's record of a code payload. */
function newCode(id: string, payload: OidcPayload): NewCode {
  if (
    payload.codeChallengeMethod !== "S256" ||
    typeof payload.codeChallenge !== "string"
  ) {
    // oidc-provider sends an exposed error's message as the OAuth `error`
    // (`errOut` in its lib/helpers/err_out.js): the message is the code.
    throw new PkceRequiredError("invalid_request");
  }
  const context: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(payload)) {
    if (!MAPPED.has(key) && value !== undefined) context[key] = value;
  }
  const { scope, resource } = payload;
  const scopes = typeof scope === "string"
    ? scope.split(" ").filter(Boolean)
    : scope;
  // Kept as they came when the store's form would lose it: a scope string
  // that is not single-space separated, a resource given as a string.
  if (typeof scope === "string" && (scopes as string[]).join(" ") !== scope) {
    context.scope = scope;
  }
  if (typeof resource === "string") context.resource = resource;
  // Empty values the store normalises away, kept as they were.
  if (isEmpty(payload.claims)) context.claims = {};
  if (Array.isArray(resource) && resource.length === 0) context.resource = [];
  const data: Record<string, unknown> = {
    clientId: payload.clientId,
    subject: payload.accountId,
    redirectUri: payload.redirectUri,
    scope: scopes ?? [],
    codeChallenge: payload.codeChallenge,
    codeChallengeMethod: "S256",
    nonce: payload.nonce,
    dpopJkt: payload.dpopJkt,
    claims: payload.claims,
    resource: typeof resource === "string" ? [resource] : resource,
    grantId: payload.grantId,
    context,
  };
  for (const key of Object.keys(data)) {
    if (data[key] === undefined) delete data[key];
  }
  // The store validates every field (fail-closed) and the code itself.
  return {
    code: id,
    expiresAt: payload.exp as number,
    data: data as unknown as NewCode["data"],
  };
}

/** The payload of a stored code, as oidc-provider stored it. */
function payloadOf(
  id: string,
  data: StoredGrantData,
  expiresAt: number,
): OidcPayload {
  const context: JsonObject = data.context;
  const payload: Record<string, unknown> = {
    ...context,
    jti: id,
    kind: "AuthorizationCode",
    exp: expiresAt,
    clientId: data.clientId,
    accountId: data.subject,
    redirectUri: data.redirectUri,
    scope: typeof context.scope === "string"
      ? context.scope
      : data.scope.join(" "),
    codeChallenge: data.codeChallenge,
    codeChallengeMethod: data.codeChallengeMethod,
  };
  if (data.nonce !== null) payload.nonce = data.nonce;
  if (data.dpopJkt !== null) payload.dpopJkt = data.dpopJkt;
  if (data.grantId !== null) payload.grantId = data.grantId;
  if (Object.keys(data.claims).length > 0) payload.claims = data.claims;
  if (typeof context.resource === "string") {
    payload.resource = context.resource;
  } else if (data.resource.length > 0) {
    payload.resource = [...data.resource];
  }
  return payload;
}

function isEmpty(value: unknown): boolean {
  return typeof value === "object" && value !== null &&
    !Array.isArray(value) && Object.keys(value).length === 0;
}
