/**
 * The store's statements. Rows travel as one `jsonb` parameter and come
 * back as `row_to_json` text parsed here, so the statements work with any
 * postgres.js options (`prepare: false`, `fetch_types: false`, transforms).
 *
 * @module
 */

import type { Sql } from "postgres";
import type { Outcome } from "./coalesce.ts";
import { DuplicateCodeError, OperationTimeoutError } from "./errors.ts";
import { CODE_COLUMNS, type CodeRow, toRecord } from "./schema.ts";
import type { CodeEntry } from "./types.ts";

/** One `INSERT` of one row: a duplicate hash is a {@linkcode DuplicateCodeError}. */
export async function insertOne(
  sql: Sql,
  table: string,
  row: CodeRow,
  timeout: number,
): Promise<void> {
  try {
    await deadline(
      "put",
      sql`
        insert into ${sql(table)} (${sql(CODE_COLUMNS)})
        select ${sql(CODE_COLUMNS)}
        from jsonb_populate_record(null::${sql(table)}, ${sql.json(row)})
      `,
      timeout,
    );
  } catch (error) {
    // 23505 unique_violation: the primary key is the only unique
    // constraint. The server's detail names the key: drop it.
    if ((error as { code?: unknown })?.code === "23505") {
      throw new DuplicateCodeError();
    }
    throw error;
  }
}

/**
 * One `INSERT` of many rows. A row whose hash is already stored (or
 * repeated earlier in the batch) is skipped, never overwritten, and is a
 * {@linkcode DuplicateCodeError} for its caller alone.
 */
export async function insertMany(
  sql: Sql,
  table: string,
  rows: readonly CodeRow[],
  timeout: number,
): Promise<Outcome<void>[]> {
  const inserted = await deadline(
    "put",
    sql`
      insert into ${sql(table)} (${sql(CODE_COLUMNS)})
      select ${sql(CODE_COLUMNS)}
      from jsonb_populate_recordset(null::${sql(table)}, ${sql.json(rows)})
      on conflict (code_hash) do nothing
      returning code_hash
    `.values(),
    timeout,
  );
  const stored = new Set(inserted.map(([hash]) => hash as string));
  return rows.map((row) =>
    stored.delete(row.code_hash)
      ? { value: undefined }
      : { error: new DuplicateCodeError() }
  );
}

/** One `DELETE ... RETURNING` of one hash: the entry, or `null`. */
export async function deleteOne(
  sql: Sql,
  table: string,
  hash: string,
  timeout: number,
): Promise<CodeEntry | null> {
  const [spent] = await deadline(
    "take",
    sql`
      delete from ${sql(table)} as spent
      where spent.code_hash = ${hash}
      returning
        row_to_json(spent)::text,
        extract(epoch from spent.expires_at)::float8
    `.values(),
    timeout,
  );
  return spent ? toRecord(rowFromJson(spent[0], spent[1])) : null;
}

/**
 * One `DELETE ... WHERE code_hash = ANY(...) RETURNING` of many hashes.
 * Each deleted row goes to exactly one caller: if a hash appears more than
 * once in the batch (racing callers), the first gets the entry and the
 * others `null`.
 */
export async function deleteMany(
  sql: Sql,
  table: string,
  hashes: readonly string[],
  timeout: number,
): Promise<Outcome<CodeEntry | null>[]> {
  // Hashes are base64url (checked by the caller): an array literal of
  // them needs no quoting, and works without postgres.js's array types.
  const spent = await deadline(
    "take",
    sql`
      delete from ${sql(table)} as spent
      where spent.code_hash = any(${`{${hashes.join(",")}}`}::text[])
      returning
        row_to_json(spent)::text,
        extract(epoch from spent.expires_at)::float8
    `.values(),
    timeout,
  );
  const rows = new Map<string, CodeRow>();
  for (const [json, expiresAt] of spent) {
    const row = rowFromJson(json, expiresAt);
    rows.set(row.code_hash, row);
  }
  return hashes.map((hash) => {
    const row = rows.get(hash);
    if (!row) return { value: null };
    rows.delete(hash);
    try {
      return { value: toRecord(row) };
    } catch (error) {
      return { error };
    }
  });
}

/**
 * The row, from `row_to_json` text (parsed here, so no `transform` of the
 * caller's postgres.js instance rewrites claim names) and the expiry in
 * epoch seconds (time zone independent).
 */
function rowFromJson(json: string, expiresAt: number): CodeRow {
  const columns = JSON.parse(json);
  const row = Object.fromEntries(
    CODE_COLUMNS.map((column) => [column, columns[column]]),
  );
  return { ...row, expires_at: new Date(expiresAt * 1000) } as CodeRow;
}

/**
 * Settles with `query`, or cancels it and rejects with
 * {@linkcode OperationTimeoutError} once `timeout` ms have passed. A query
 * still queued in postgres.js is removed and never runs; one already sent
 * gets a cancel request.
 */
export function deadline<T>(
  operation: string,
  query: Promise<T> & { cancel?: () => unknown },
  timeout: number,
): Promise<T> {
  if (timeout === Infinity) return query;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      // cancel() of a sent query opens a connection to send the request;
      // during an outage that fails, which is fine.
      Promise.resolve(query.cancel?.()).catch(() => {});
      reject(new OperationTimeoutError(operation, timeout));
    }, timeout);
  });
  return Promise.race([query, expired]).finally(() => clearTimeout(timer));
}
