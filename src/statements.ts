/**
 * The store's statements, one per batch of calls (see `coalesce.ts`).
 *
 * Inputs travel as one `jsonb` parameter that postgres.js serialises when it
 * writes the statement to a connection ({@linkcode Batch.send}): a call that
 * timed out before then is not in it. Results are read as raw bytes (an
 * entry is one JSON text column, parsed once here), so the statements work
 * with any postgres.js options (`prepare: false`, `fetch_types: false`,
 * column and value transforms). No statement text is ever built from a
 * value.
 *
 * @module
 */

import type { Sql } from "postgres";
import { cancelWhenRunning } from "./_cancel.ts";
import { decode } from "./_driver.ts";
import { quoteName } from "./table_name.ts";
import type { Batch, BatchRunner, Outcome } from "./coalesce.ts";
import { DuplicateCodeError } from "./errors.ts";
import {
  CODE_COLUMNS,
  type CodeRow,
  entryFromColumns,
  toSpentCode,
} from "./schema.ts";
import type { CodeEntry, SpentCode } from "./types.ts";

/** Where a store keeps its codes and tombstones, and for how long. */
export interface Tables {
  /** The codes table (qualified name). */
  readonly codes: string;
  /** The tombstone table (qualified name). */
  readonly spent: string;
  /** Seconds a tombstone is kept. */
  readonly retention: number;
}

/**
 * Runs the statement `build` makes for a batch, its input being the JSON of
 * `payload(sent)` for the calls still waiting when it is written. Once every
 * call has timed out while it runs, a cancel request is sent.
 *
 * A serialization failure (40001) is retried, with the calls still
 * waiting: under a `default_transaction_isolation` of `repeatable read` or
 * `serializable`, the losers of a race for a row fail so (the winner's
 * delete is not in their snapshot). The failed statement changed nothing,
 * and the retry's snapshot has the winner's commit, so a loser gets `null`
 * (or its `DuplicateCodeError`), whatever the server's default.
 */
async function execute<R>(
  sql: Sql,
  batch: Batch<unknown>,
  payload: (sent: readonly number[]) => unknown,
  build: (json: ReturnType<Sql["json"]>) => Promise<R>,
): Promise<R> {
  let query: Promise<R> | undefined;
  let settled = false;
  batch.onAbandoned(() => cancelWhenRunning(sql, query, () => settled));
  for (let attempt = 1;; attempt++) {
    const retry = attempt > 1;
    settled = false;
    query = build(sql.json({
      toJSON: () =>
        payload(
          retry ? batch.send().filter((i) => batch.waiting(i)) : batch.send(),
        ),
    }));
    try {
      return await query;
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (code !== "40001" || attempt >= SERIALIZATION_RETRIES) throw error;
    } finally {
      settled = true;
    }
  }
}

/** Attempts of a statement that fails with a serialization failure. */
const SERIALIZATION_RETRIES = 16;

/** Distinct inputs of the sent calls. */
function distinct<I>(batch: Batch<I>, sent: readonly number[]): I[] {
  return [...new Set(sent.map((i) => batch.inputs[i]!))];
}

/**
 * `put`: one `INSERT` of the batch's rows. A row whose hash is stored, or
 * whose tombstone has not expired (the code was redeemed: RFC 6749 §4.1.2,
 * single use per code value), or that repeats an earlier row of the batch
 * is not inserted, and is a {@linkcode DuplicateCodeError} for its caller
 * alone; nothing is ever overwritten. The tombstone is looked up by the same
 * statement, not before it. A row whose code a concurrent `take` was
 * redeeming (the insert waited for it) is deleted again and is a
 * `DuplicateCodeError` too: its tombstone, committed after the statement's
 * snapshot, would make it a code no one can redeem.
 */
export function insertRows(
  sql: Sql,
  { codes, spent }: Tables,
): BatchRunner<CodeRow, void> {
  return async (batch) => {
    // The first sent row of each hash goes in the statement; the others of
    // the batch are duplicates of it. Which call's row was sent is known,
    // so success goes to that call only.
    const owner = new Map<string, number>();
    const inserted = await execute(
      sql,
      batch,
      (sent) => {
        owner.clear();
        for (const i of sent) {
          const hash = batch.inputs[i]!.code_hash;
          if (!owner.has(hash)) owner.set(hash, i);
        }
        return [...owner.values()].map((i) => batch.inputs[i]);
      },
      (rows) =>
        sql`
          with inserted as (
            insert into ${identifier(sql, codes)} (${columns(sql)})
            select ${columns(sql)}
            from jsonb_populate_recordset(null::${
          identifier(sql, codes)
        }, ${rows}) r
            where not exists (
              select from ${identifier(sql, spent)} s
              where s.code_hash = r.code_hash and s.expires_at > now()
            )
            on conflict (code_hash) do nothing
            returning code_hash
          )
          -- A row inserted although the statement's snapshot holds one with
          -- the same hash: a take was deleting it, and the insert waited for
          -- its commit. The tombstone it wrote is not in the snapshot.
          select code_hash, exists (
            select from ${identifier(sql, codes)} c
            where c.code_hash = inserted.code_hash
          )::text
          from inserted
        `.raw(),
    );
    const stored = new Set<string>();
    const raced: string[] = [];
    for (const [hash, redeemed] of decode(inserted)) {
      if (redeemed === "true") raced.push(hash!);
      else stored.add(hash!);
    }
    // Such a code value was just redeemed: its new row could never be (a
    // live tombstone), so it goes, and its caller learns it.
    if (raced.length > 0) {
      await sql`
        delete from ${identifier(sql, codes)}
        where code_hash in (select jsonb_array_elements_text(${
        sql.json(raced)
      }))
      `;
    }
    return batch.inputs.map(({ code_hash: hash }, i) =>
      owner.get(hash) === i && stored.has(hash)
        ? { value: undefined }
        : { error: new DuplicateCodeError() }
    );
  };
}

/**
 * `take`: one statement redeems the batch's hashes: `DELETE ... RETURNING`
 * the entries, and in the same statement (a data-modifying CTE) their
 * tombstones are written. A row whose code already has a live tombstone
 * (it was redeemed before, and stored again by other means) is deleted but
 * returned to no one, so a code value is redeemed at most once while its
 * tombstone lasts. Each entry goes to exactly one caller: the first still
 * waiting that asked for it; the others get `null`.
 */
export function deleteRows(
  sql: Sql,
  tables: Tables,
): BatchRunner<string, CodeEntry | null> {
  return async (batch) => {
    const spent = await execute(
      sql,
      batch,
      // A hash twice in the list is harmless: its row is deleted once.
      (sent) => sent.map((i) => batch.inputs[i]),
      (hashes) =>
        sql`
          with spent as (
            delete from ${identifier(sql, tables.codes)}
            where code_hash = any(array(select jsonb_array_elements_text(${hashes})))
            returning *
          ), ${tombstones(sql, tables)}
          -- One JSON text per row, the columns of CODE_COLUMNS in order.
          select json_build_array(code_hash, client_id, subject,
            redirect_uri, scope, code_challenge, code_challenge_method, nonce,
            dpop_jkt, claims, resource, extract(epoch from expires_at),
            grant_id, context)::text
          from spent
          where code_hash in (select code_hash from tombstones)
        `.raw(),
    );
    const rows = new Map<string, unknown[]>();
    for (const [text] of decode(spent)) {
      const values = JSON.parse(text!) as unknown[];
      rows.set(values[0] as string, values);
    }
    return batch.inputs.map((hash, i): Outcome<CodeEntry | null> => {
      const values = rows.get(hash);
      if (values === undefined || !batch.waiting(i)) return { value: null };
      rows.delete(hash);
      try {
        return { value: entryFromColumns(values) };
      } catch (error) {
        return { error };
      }
    });
  };
}

/**
 * `revokeGrant`: deletes the live codes of the batch's grants; each call
 * gets how many codes of its grant were deleted (a grant asked for twice:
 * the first caller still waiting gets the count, the others 0).
 */
export function deleteGrants(
  sql: Sql,
  { codes }: Tables,
): BatchRunner<string, number> {
  return async (batch) => {
    const deleted = await execute(
      sql,
      batch,
      (sent) => distinct(batch, sent),
      (grants) =>
        sql`
          delete from ${identifier(sql, codes)}
          where grant_id in (select jsonb_array_elements_text(${grants}))
          returning grant_id
        `.raw(),
    );
    const counts = new Map<string, number>();
    for (const [grant] of decode(deleted)) {
      counts.set(grant!, (counts.get(grant!) ?? 0) + 1);
    }
    return batch.inputs.map((grant, i) => {
      const count = counts.get(grant) ?? 0;
      if (batch.waiting(i)) counts.delete(grant);
      return { value: batch.waiting(i) ? count : 0 };
    });
  };
}

/**
 * One batch of `purgeExpired`: deletes up to the batch's size of expired
 * rows of `table` (codes or tombstones), skipping rows another transaction
 * holds; returns how many. The size is read when the statement is written,
 * so a statement sent after its call timed out deletes nothing.
 */
export function purgeRows(
  sql: Sql,
  table: string,
): BatchRunner<number, number> {
  return async (batch) => {
    const result = await execute(
      sql,
      batch,
      (sent) => [sent.length > 0 ? batch.inputs[sent[0]!] : 0],
      (size) =>
        sql`
          with doomed as (
            select code_hash from ${identifier(sql, table)}
            where expires_at < now()
            order by expires_at
            limit (${size}->>0)::int
            for update skip locked
          ), gone as (
            delete from ${identifier(sql, table)}
            where code_hash in (select code_hash from doomed)
            returning 1
          )
          select count(*)::int from gone
        `.raw(),
    );
    const [[count] = []] = decode(result);
    return batch.inputs.map(() => ({ value: Number(count) }));
  };
}

/**
 * The tombstones of the rows in `spent`, kept `retention` seconds. One that
 * exists and has not expired is kept as it is (and its row not returned);
 * an expired one is replaced.
 */
function tombstones(sql: Sql, { spent, retention }: Tables) {
  return sql`
    tombstones as (
      insert into ${identifier(sql, spent)} as s (code_hash, client_id, subject,
        redirect_uri, code_challenge, grant_id, spent_at, expires_at)
      select code_hash, client_id, subject, redirect_uri, code_challenge,
        grant_id, now(), now() + make_interval(secs => ${retention})
      from spent
      on conflict (code_hash) do update set
        client_id = excluded.client_id, subject = excluded.subject,
        redirect_uri = excluded.redirect_uri,
        code_challenge = excluded.code_challenge,
        grant_id = excluded.grant_id, spent_at = excluded.spent_at,
        expires_at = excluded.expires_at
      where s.expires_at <= now()
      returning code_hash
    )
  `;
}

/**
 * `spent`: the tombstones of the batch's hashes, unless expired, validated
 * on the way out.
 */
export function findTombstones(
  sql: Sql,
  { spent: table }: Tables,
): BatchRunner<string, SpentCode | null> {
  return async (batch) => {
    const found = await execute(
      sql,
      batch,
      (sent) => sent.map((i) => batch.inputs[i]),
      (hashes) =>
        sql`
          select code_hash, client_id, subject, redirect_uri, code_challenge,
            grant_id, floor(extract(epoch from spent_at))::float8
          from ${identifier(sql, table)}
          where code_hash = any(array(select jsonb_array_elements_text(${hashes})))
            and expires_at > now()
        `.raw(),
    );
    const rows = byHash(decode(found));
    return batch.inputs.map((hash) => {
      const row = rows.get(hash);
      if (!row) return { value: null };
      try {
        return { value: toSpentCode([...row.slice(0, 6), Number(row[6])]) };
      } catch (error) {
        return { error };
      }
    });
  };
}

/**
 * A table name as a fragment of statement text, quoted here: `sql(name)`
 * would pass it through the pool's `transform.column.to`, which is meant
 * for the caller's own columns and would rename the store's tables.
 */
function identifier(sql: Sql, name: string) {
  return sql.unsafe(quoteName(name));
}

/** {@linkcode CODE_COLUMNS}, quoted, as a fragment of statement text. */
function columns(sql: Sql) {
  return sql.unsafe(CODE_COLUMNS.map((column) => `"${column}"`).join(", "));
}

/** The rows by their first column, the hash. */
function byHash(rows: readonly (string | null)[][]) {
  const found = new Map<string, (string | null)[]>();
  for (const row of rows) found.set(row[0]!, row);
  return found;
}
