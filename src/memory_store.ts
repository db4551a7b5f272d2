/**
 * An in-memory code store for unit tests: the same `CodeStore` interface,
 * validation, errors and single-use semantics as the PostgreSQL store,
 * within one process.
 *
 * It is single-process only, like the ETS table it mirrors: two processes
 * (or two Deno Deploy isolates) each have their own store, so a code could
 * be redeemed once in each. Use the PostgreSQL store in production.
 *
 * @example
 * ```ts
 * import { createMemoryCodeStore } from "@attesto/code-store/memory";
 * import { assertEquals } from "@std/assert";
 *
 * const store = createMemoryCodeStore();
 * await store.put({
 *   code: "SplxlOBeZQQYbYS6WxSbIA",
 *   expiresAt: Math.floor(Date.now() / 1000) + 60,
 *   data: {
 *     clientId: "s6BhdRkqt3",
 *     subject: "user-42",
 *     redirectUri: "https://client.example.org/cb",
 *     scope: ["openid"],
 *     codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
 *     codeChallengeMethod: "S256",
 *   },
 * });
 * const [first, second] = await Promise.all([
 *   store.take("SplxlOBeZQQYbYS6WxSbIA"),
 *   store.take("SplxlOBeZQQYbYS6WxSbIA"),
 * ]);
 * assertEquals([first === null, second === null].sort(), [false, true]);
 * assertEquals((await store.spent("SplxlOBeZQQYbYS6WxSbIA"))?.subject, "user-42");
 * ```
 *
 * @module
 */

import { promised } from "./_promised.ts";
import { DuplicateCodeError } from "./errors.ts";
import { hashCode, presentedHash } from "./hash_code.ts";
import type { PurgeResult } from "./purge.ts";
import { type CodeRow, rowOf, toRecord, validateNewCode } from "./schema.ts";
import { checkGrantId, type CodeStore } from "./store.ts";
import { knownOptions, retentionSeconds } from "./options.ts";
import type { CodeEntry, NewCode, SpentCode } from "./types.ts";

/** Options for {@linkcode createMemoryCodeStore}. */
export interface MemoryCodeStoreOptions {
  /** Seconds a tombstone is kept (default 86 400). */
  readonly tombstoneRetentionSeconds?: number | undefined;
  /** The clock, in milliseconds since the epoch (default `Date.now`). */
  readonly now?: (() => number) | undefined;
}

/** The in-memory store: a {@linkcode CodeStore} that can also purge. */
export interface MemoryCodeStore extends CodeStore {
  /**
   * Deletes expired codes and expired tombstones.
   *
   * @returns How many of each were deleted.
   */
  purgeExpired(): PurgeResult;
}

interface Tombstone {
  readonly spent: SpentCode;
  /** Milliseconds since the epoch. */
  readonly keepUntil: number;
}

/**
 * Creates an in-memory code store.
 *
 * @param options Tombstone retention and the clock.
 * @returns The store.
 * @throws {TypeError} If an option is unknown or of the wrong type.
 * @throws {RangeError} If `tombstoneRetentionSeconds` is out of range.
 */
export function createMemoryCodeStore(
  options: MemoryCodeStoreOptions = {},
): MemoryCodeStore {
  const o = knownOptions(options, ["tombstoneRetentionSeconds", "now"]);
  const retention = retentionSeconds(o.tombstoneRetentionSeconds);
  const now = o.now ?? Date.now;
  if (typeof now !== "function") {
    throw new TypeError(
      "options.now must be a function returning milliseconds",
    );
  }
  const codes = new Map<string, CodeRow>();
  const tombstones = new Map<string, Tombstone>();

  return {
    put: (input: NewCode): Promise<void> =>
      promised(() => {
        const { code, data, expiresAt } = validateNewCode(input);
        const row = rowOf({ codeHash: hashCode(code), data, expiresAt });
        // Synchronous from the check to the write: atomic in this process. A
        // code redeemed while its tombstone lasts is used up, as in PostgreSQL.
        const tombstone = tombstones.get(row.code_hash);
        if (
          codes.has(row.code_hash) || (tombstone && tombstone.keepUntil > now())
        ) {
          throw new DuplicateCodeError();
        }
        codes.set(row.code_hash, row);
      }),

    take: (code: string): Promise<CodeEntry | null> =>
      promised(() => {
        const hash = presentedHash(code);
        const row = hash === undefined ? undefined : codes.get(hash);
        if (!row) return null;
        // Synchronous from the read to the delete: one caller gets the row.
        codes.delete(row.code_hash);
        const spentAt = now();
        tombstones.set(row.code_hash, {
          spent: {
            codeHash: row.code_hash,
            clientId: row.client_id,
            subject: row.subject,
            redirectUri: row.redirect_uri,
            codeChallenge: row.code_challenge,
            grantId: row.grant_id,
            spentAt: Math.floor(spentAt / 1000),
          },
          keepUntil: spentAt + retention * 1000,
        });
        return toRecord(row);
      }),

    spent: (code: string): Promise<SpentCode | null> =>
      promised(() => {
        const hash = presentedHash(code);
        const tombstone = hash === undefined ? undefined : tombstones.get(hash);
        return tombstone && tombstone.keepUntil > now()
          ? { ...tombstone.spent }
          : null;
      }),

    revokeGrant: (grantId: string): Promise<number> =>
      promised(() => {
        checkGrantId(grantId);
        let revoked = 0;
        for (const [hash, row] of codes) {
          if (row.grant_id === grantId) {
            codes.delete(hash);
            revoked++;
          }
        }
        return revoked;
      }),

    purgeExpired(): PurgeResult {
      const at = now();
      let purgedCodes = 0;
      let purgedTombstones = 0;
      for (const [hash, row] of codes) {
        if (row.expires_at.getTime() < at) {
          codes.delete(hash);
          purgedCodes++;
        }
      }
      for (const [hash, tombstone] of tombstones) {
        if (tombstone.keepUntil < at) {
          tombstones.delete(hash);
          purgedTombstones++;
        }
      }
      return { codes: purgedCodes, tombstones: purgedTombstones };
    },
  };
}
