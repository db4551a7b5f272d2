/**
 * What the load parent and its workers share: the plan, and the codes and
 * grants derived from a seed and an index (so a million codes need not be
 * shipped between processes).
 *
 * @module
 */

import postgres, { type Options, type Sql } from "../postgres.ts";
import { type CodeEntry, hashCode, type NewCode } from "../../mod.ts";

/** Options of a postgres.js pool. */
export type PoolOptions = Options;

/** `createCodeStore` options a plan can carry (JSON-serialisable). */
export interface StoreOptions {
  readonly timeoutMs?: number;
  readonly coalesce?: boolean;
}

/** What one worker process needs to know. */
export interface WorkerPlan {
  /** The server. */
  readonly url: string;
  /** postgres.js options for every pool (JSON-serialisable). */
  readonly poolOptions: PoolOptions;
  /** Options of every store, beside the table. */
  readonly storeOptions: StoreOptions;
  /** The table. */
  readonly table: string;
  /** Codes are derived from it. */
  readonly seed: string;
  /** Codes 0 .. codes-1. */
  readonly codes: number;
  /** This worker's index, and how many there are. */
  readonly index: number;
  readonly processes: number;
  /** Pools in this process, and connections per pool. */
  readonly pools: number;
  readonly connections: number;
  /** Concurrent takes of each code in this process. */
  readonly racers: number;
}

/** A pool as the plan describes it. */
export function connectTo(plan: WorkerPlan): Sql {
  return postgres(plan.url, {
    max: plan.connections,
    onnotice: () => {},
    ...plan.poolOptions,
  });
}

const EXPIRES_AT = 4_102_444_800; // 2100-01-01

/** The code with index `i`, and the grant it is stored with. */
export function newCodeFor(seed: string, i: number): NewCode {
  return {
    code: `${seed}.${i}`,
    expiresAt: EXPIRES_AT,
    data: {
      clientId: "load-client",
      subject: `user-${i}`,
      redirectUri: "https://client.example/cb",
      scope: ["openid"],
      codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
      codeChallengeMethod: "S256",
      claims: { i, seed },
    },
  };
}

/** What `take()` must return for the code with index `i`. */
export function entryFor(seed: string, i: number): CodeEntry {
  const { code, data, expiresAt } = newCodeFor(seed, i);
  return {
    codeHash: hashCode(code),
    expiresAt,
    data: {
      ...data,
      nonce: null,
      dpopJkt: null,
      claims: data.claims ?? {},
      resource: [],
      grantId: null,
      context: {},
    },
  };
}
