/**
 * The store's statements, one per batch of calls (see `coalesce.ts`).
 *
 * Each statement's text is built once, when its runner is made (once per
 * store and pool), from the validated table names and the column lists of
 * `_columns.ts`; it is sent with `sql.unsafe` and one `jsonb` parameter.
 * postgres.js serialises that parameter when it writes the statement to a
 * connection ({@linkcode Batch.send}): a call that timed out before then is
 * not in it. Results are read as raw bytes (an entry is one JSON text
 * column, parsed once here), so the statements work with any postgres.js
 * options (`prepare: false`, `fetch_types: false`, column and value
 * transforms: the store's identifiers are quoted here, never passed
 * through the pool's `transform.column.to`). No statement text is ever
 * built from a value.
 *
 * @module
 */

import { names, SPENT_TABLE, TOMBSTONE_FROM_ROW } from "./_columns.ts";
import type { Driver, Rows } from "./driver/driver.ts";
import { parseJson } from "./_parse_json.ts";
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
 * Runs `text` for a batch, its one parameter (`$1`, jsonb) being the JSON
 * of `payload(sent)` for the calls still waiting when it is written, as the
 * only statement on its connection (the driver's `send`). Once every call
 * has timed out, the batch's signal stops it, and its rows go to no one.
 *
 * A serialization failure (40001) is retried, with the calls still
 * waiting: under a `default_transaction_isolation` of `repeatable read` or
 * `serializable`, the losers of a race for a row fail so (the winner's
 * delete is not in their snapshot). The failed statement changed nothing,
 * and the retry's snapshot has the winner's commit, so a loser gets `null`
 * (or its `DuplicateCodeError`), whatever the server's default.
 */
async function execute(
  driver: Driver,
  batch: Batch<unknown>,
  payload: (sent: readonly number[]) => unknown,
  text: string,
): Promise<Rows> {
  const { signal } = batch;
  for (let attempt = 1;; attempt++) {
    const retry = attempt > 1;
    try {
      return await driver.send({
        text,
        payload: () =>
          payload(
            retry ? batch.send().filter((i) => batch.waiting(i)) : batch.send(),
          ),
      }, signal);
    } catch (error) {
      // Stopped: every call had timed out.
      if (signal.aborted) return [];
      const failure = driver.failure(error);
      if (
        failure.kind !== "server" || failure.sqlState !== "40001" ||
        attempt >= SERIALIZATION_RETRIES
      ) throw error;
    }
  }
}

/** Attempts of a statement that fails with a serialization failure. */
const SERIALIZATION_RETRIES = 16;

/** The inputs of the sent calls, as they are (a hash twice is harmless). */
function inputsOf<I>(batch: Batch<I>, sent: readonly number[]): I[] {
  return sent.map((i) => batch.inputs[i]!);
}

/** A list of column names, comma-separated. */
function list(columns: readonly string[]): string {
  return columns.join(", ");
}

/** The outcome of a call that gets nothing. */
const NULL_OUTCOME: Outcome<null> = { value: null };

/** The hashes of the batch's `$1`, as a set a statement can match. */
const HASHES = "(select jsonb_array_elements_text($1))";

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
 *
 * Both lookups are scalar subqueries, an index probe per row whatever the
 * tables held when the statement was planned: as `not exists` the
 * tombstone lookup became a join, and a plan made while the tables were
 * empty (kept by a prepared statement) scanned the tombstones, and the
 * codes for the race check, whole on every statement.
 */
export function insertRows(
  driver: Driver,
  { codes, spent }: Tables,
): BatchRunner<CodeRow, void> {
  const table = quoteName(codes);
  const text = `
    with inserted as (
      insert into ${table} (${list(CODE_COLUMNS)})
      select ${list(CODE_COLUMNS)}
      from jsonb_populate_recordset(null::${table}, $1) r
      where (
        select 1 from ${quoteName(spent)} s
        where s.code_hash = r.code_hash and s.expires_at > now()
        limit 1
      ) is null
      on conflict (code_hash) do nothing
      returning code_hash
    )
    -- A row inserted although the statement's snapshot holds one with the
    -- same hash: a take was deleting it, and the insert waited for its
    -- commit. The tombstone it wrote is not in the snapshot.
    select code_hash, ((
      select 1 from ${table} c where c.code_hash = inserted.code_hash limit 1
    ) is not null)::text
    from inserted`;
  const undo = `delete from ${table} where code_hash in ${HASHES}`;
  return async (batch) => {
    // The first sent row of each hash goes in the statement; the others of
    // the batch are duplicates of it. Which call's row was sent is known,
    // so success goes to that call only.
    const owner = new Map<string, number>();
    const inserted = await execute(
      driver,
      batch,
      (sent) => {
        owner.clear();
        for (const i of sent) {
          const hash = batch.inputs[i]!.code_hash;
          if (!owner.has(hash)) owner.set(hash, i);
        }
        return [...owner.values()].map((i) => batch.inputs[i]);
      },
      text,
    );
    const stored = new Set<string>();
    const raced: string[] = [];
    for (const [hash, redeemed] of inserted) {
      if (redeemed === "true") raced.push(hash!);
      else stored.add(hash!);
    }
    // Such a code value was just redeemed: its new row could never be (a
    // live tombstone), so it goes, and its caller learns it.
    if (raced.length > 0) {
      await driver.send({
        text: undo,
        payload: () => raced,
      });
    }
    return batch.inputs.map(({ code_hash: hash }, i) =>
      owner.get(hash) === i && stored.has(hash)
        ? { value: undefined }
        : { error: new DuplicateCodeError() }
    );
  };
}

/**
 * An entry as one JSON array, the columns of {@linkcode CODE_COLUMNS} in
 * order, `expires_at` in epoch seconds.
 */
const ENTRY_JSON = `json_build_array(${
  list(CODE_COLUMNS.map((column) =>
    column === "expires_at" ? "extract(epoch from expires_at)" : column
  ))
})::text`;

/**
 * The text of `take`'s statement (see {@linkcode deleteRows}): its one
 * parameter is the JSON array of the hashes to redeem. Exported for the
 * benchmark, which sends it through the raw driver.
 */
export function takeStatement({ codes, spent, retention }: Tables): string {
  const kept = TOMBSTONE_FROM_ROW.filter((column) => column !== "code_hash");
  return `
    with spent as (
      delete from ${quoteName(codes)}
      where code_hash = any(array${HASHES})
      returning *
    ), tombstones as (
      insert into ${quoteName(spent)} as s (${list(names(SPENT_TABLE))})
      select ${list(TOMBSTONE_FROM_ROW)}, now(),
        now() + make_interval(secs => ${Math.trunc(retention)})
      from spent
      on conflict (code_hash) do update set
        ${
    list([...kept, "spent_at", "expires_at"].map((c) => `${c} = excluded.${c}`))
  }
      where s.expires_at <= now()
      returning code_hash
    )
    select ${ENTRY_JSON}
    from spent
    where code_hash in (select code_hash from tombstones)`;
}

/**
 * `take`: one statement redeems the batch's hashes: `DELETE ... RETURNING`
 * the entries, and in the same statement (a data-modifying CTE) their
 * tombstones are written, kept `retention` seconds. A tombstone that exists
 * and has not expired is kept as it is, and its row is deleted but
 * returned to no one (it was redeemed before, and stored again by other
 * means), so a code value is redeemed at most once while its tombstone
 * lasts; an expired one is replaced. Each entry goes to exactly one caller:
 * the first still waiting that asked for it; the others get `null`.
 */
export function deleteRows(
  driver: Driver,
  tables: Tables,
): BatchRunner<string, CodeEntry | null> {
  const text = takeStatement(tables);
  return async (batch) => {
    const taken = await execute(
      driver,
      batch,
      (sent) => inputsOf(batch, sent),
      text,
    );
    // The hot path: plain loops, no iterator, one map of the entries.
    const rows = new Map<string, unknown[]>();
    for (let r = 0; r < taken.length; r++) {
      const values = parseJson(taken[r]![0]!) as unknown[];
      rows.set(values[0] as string, values);
    }
    const { inputs } = batch;
    const outcomes: Outcome<CodeEntry | null>[] = new Array(inputs.length);
    for (let i = 0; i < inputs.length; i++) {
      const values = rows.size === 0 ? undefined : rows.get(inputs[i]!);
      if (values === undefined || !batch.waiting(i)) {
        outcomes[i] = NULL_OUTCOME;
        continue;
      }
      rows.delete(inputs[i]!);
      try {
        outcomes[i] = { value: entryFromColumns(values) };
      } catch (error) {
        outcomes[i] = { error };
      }
    }
    return outcomes;
  };
}

/**
 * `revokeGrant`: deletes the live codes of the batch's grants; each call
 * gets how many codes of its grant were deleted (a grant asked for twice:
 * the first caller still waiting gets the count, the others 0).
 */
export function deleteGrants(
  driver: Driver,
  { codes }: Tables,
): BatchRunner<string, number> {
  const text = `
    delete from ${quoteName(codes)}
    where grant_id in (select jsonb_array_elements_text($1))
    returning grant_id`;
  return async (batch) => {
    const deleted = await execute(
      driver,
      batch,
      (sent) => [...new Set(inputsOf(batch, sent))],
      text,
    );
    const counts = new Map<string, number>();
    for (const [grant] of deleted) {
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
 * One batch of `purgeExpired`: deletes up to `size` expired rows of `table`
 * (codes or tombstones), skipping rows another transaction holds; returns
 * how many. The size is read when the statement is written (`written` is
 * called then): sent after `signal` aborted, it deletes nothing.
 */
export async function purgeRows(
  driver: Driver,
  table: string,
  size: number,
  signal: AbortSignal,
  written: () => void,
): Promise<number> {
  const name = quoteName(table);
  const text = `
    with doomed as (
      select code_hash from ${name}
      where expires_at < now()
      order by expires_at
      limit ($1->>0)::int
      for update skip locked
    ), gone as (
      delete from ${name}
      where code_hash in (select code_hash from doomed)
      returning 1
    )
    select count(*)::int from gone`;
  const [[count] = []] = await driver.send({
    text,
    payload: () => {
      written();
      return [signal.aborted ? 0 : size];
    },
  }, signal);
  return Number(count);
}

/**
 * `spent`: the tombstones of the batch's hashes, unless expired, validated
 * on the way out.
 */
export function findTombstones(
  driver: Driver,
  { spent: table }: Tables,
): BatchRunner<string, SpentCode | null> {
  const text = `
    select ${list(TOMBSTONE_FROM_ROW)},
      floor(extract(epoch from spent_at))::float8
    from ${quoteName(table)}
    where code_hash = any(array${HASHES}) and expires_at > now()`;
  return async (batch) => {
    const found = await execute(
      driver,
      batch,
      (sent) => inputsOf(batch, sent),
      text,
    );
    const rows = new Map<string, readonly (string | null)[]>();
    for (const row of found) rows.set(row[0]!, row);
    const at = TOMBSTONE_FROM_ROW.length;
    return batch.inputs.map((hash) => {
      const row = rows.get(hash);
      if (!row) return { value: null };
      try {
        return {
          value: toSpentCode([...row.slice(0, at), Number(row[at])]),
        };
      } catch (error) {
        return { error };
      }
    });
  };
}
