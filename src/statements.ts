/**
 * The store's statements. Rows travel as one `jsonb` parameter and come
 * back as plain text columns (arrays and claims as JSON text) parsed here,
 * so the statements work with any postgres.js options (`prepare: false`,
 * `fetch_types: false`, column and value transforms).
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
      ${returning(sql)}
    `.values(),
    timeout,
  );
  return spent ? toRecord(rowOf(spent)) : null;
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
      ${returning(sql)}
    `.values(),
    timeout,
  );
  const rows = new Map<string, CodeRow>();
  for (const values of spent) {
    const row = rowOf(values);
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
 * The columns `take` reads, in {@linkcode CODE_COLUMNS} order: text, with
 * arrays and claims as JSON text and the expiry in epoch seconds, so no
 * type parser or `transform` of the caller's postgres.js instance touches
 * them (a camelCase transform would rename keys inside `jsonb` claims) and
 * the session time zone does not matter.
 */
function returning(sql: Sql) {
  return sql`
    returning
      spent.code_hash,
      spent.client_id,
      spent.subject,
      spent.redirect_uri,
      array_to_json(spent.scope)::text,
      spent.code_challenge,
      spent.code_challenge_method,
      spent.nonce,
      spent.dpop_jkt,
      spent.claims::text,
      array_to_json(spent.resource)::text,
      extract(epoch from spent.expires_at)::float8
  `;
}

/** The row read by {@linkcode returning}. */
function rowOf(values: readonly unknown[]): CodeRow {
  const [hash, client, subject, uri, scope, challenge, method, ...rest] =
    values;
  const [nonce, jkt, claims, resource, expiresAt] = rest;
  return {
    code_hash: hash,
    client_id: client,
    subject,
    redirect_uri: uri,
    scope: JSON.parse(scope as string),
    code_challenge: challenge,
    code_challenge_method: method,
    nonce,
    dpop_jkt: jkt,
    claims: JSON.parse(claims as string),
    resource: JSON.parse(resource as string),
    expires_at: new Date((expiresAt as number) * 1000),
  } as CodeRow;
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
