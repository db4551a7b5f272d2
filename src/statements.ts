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

/** One `INSERT` of one row: a duplicate hash is a {@linkcode DuplicateCodeError}. */
export async function insertOne(
  sql: Sql,
  { codes: table }: Tables,
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
  { codes: table }: Tables,
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

/**
 * One statement redeems one hash: `DELETE ... RETURNING` the entry, and in
 * the same statement (a data-modifying CTE) the tombstone is written.
 */
export async function deleteOne(
  sql: Sql,
  tables: Tables,
  hash: string,
  timeout: number,
): Promise<CodeEntry | null> {
  const [spent] = await deadline(
    "take",
    sql`
      with spent as (
        delete from ${sql(tables.codes)} where code_hash = ${hash}
        returning *
      ), ${tombstones(sql, tables)}
      ${selectSpent(sql)}
    `.values(),
    timeout,
  );
  return spent ? toRecord(rowFromColumns(spent)) : null;
}

/**
 * One statement redeems many hashes: `DELETE ... WHERE code_hash =
 * ANY(...) RETURNING`, with their tombstones. Each deleted row goes to
 * exactly one caller: if a hash appears more than once in the batch
 * (racing callers), the first gets the entry and the others `null`.
 */
export async function deleteMany(
  sql: Sql,
  tables: Tables,
  hashes: readonly string[],
  timeout: number,
): Promise<Outcome<CodeEntry | null>[]> {
  // Hashes are base64url (checked by the caller): an array literal of
  // them needs no quoting, and works without postgres.js's array types.
  const spent = await deadline(
    "take",
    sql`
      with spent as (
        delete from ${sql(tables.codes)}
        where code_hash = any(${`{${hashes.join(",")}}`}::text[])
        returning *
      ), ${tombstones(sql, tables)}
      ${selectSpent(sql)}
    `.values(),
    timeout,
  );
  const rows = new Map<string, CodeRow>();
  for (const values of spent) {
    const row = rowFromColumns(values);
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
 * The tombstones of the rows in `spent`, kept `retention` seconds. A hash
 * spent before (a code issued twice, a caller bug) gets the latest grant.
 */
function tombstones(sql: Sql, { spent, retention }: Tables) {
  return sql`
    tombstones as (
      insert into ${sql(spent)} (code_hash, client_id, subject, redirect_uri,
        code_challenge, grant_id, spent_at, expires_at)
      select code_hash, client_id, subject, redirect_uri, code_challenge,
        grant_id, now(), now() + make_interval(secs => ${retention})
      from spent
      on conflict (code_hash) do update set
        client_id = excluded.client_id, subject = excluded.subject,
        redirect_uri = excluded.redirect_uri,
        code_challenge = excluded.code_challenge,
        grant_id = excluded.grant_id, spent_at = excluded.spent_at,
        expires_at = excluded.expires_at
    )
  `;
}

/**
 * The tombstone of a hash, unless it has expired: whether (and what) a
 * code was redeemed.
 */
export async function findSpent(
  sql: Sql,
  { spent: table }: Tables,
  hash: string,
  timeout: number,
): Promise<SpentCode | null> {
  const [row] = await deadline(
    "spent",
    sql`
      select code_hash, client_id, subject, redirect_uri, code_challenge,
        grant_id, floor(extract(epoch from spent_at))::float8
      from ${sql(table)}
      where code_hash = ${hash} and expires_at > now()
    `.values(),
    timeout,
  );
  if (!row) return null;
  const [codeHash, clientId, subject, redirectUri, codeChallenge, grantId] =
    row;
  const spentAt = row[6];
  return {
    codeHash,
    clientId,
    subject,
    redirectUri,
    codeChallenge,
    grantId,
    spentAt,
  } as SpentCode;
}

/**
 * The columns `take` reads from the deleted rows, in
 * {@linkcode CODE_COLUMNS} order: text, with arrays and claims as JSON text
 * and the expiry in epoch seconds, so no type parser or `transform` of the
 * caller's postgres.js instance touches them (a camelCase transform would
 * rename keys inside `jsonb` claims) and the session time zone does not
 * matter.
 */
function selectSpent(sql: Sql) {
  return sql`
    select
      code_hash,
      client_id,
      subject,
      redirect_uri,
      array_to_json(scope)::text,
      code_challenge,
      code_challenge_method,
      nonce,
      dpop_jkt,
      claims::text,
      array_to_json(resource)::text,
      extract(epoch from expires_at)::float8,
      grant_id
    from spent
  `;
}

/** The row read by {@linkcode selectSpent}. */
function rowFromColumns(values: readonly unknown[]): CodeRow {
  const [hash, client, subject, uri, scope, challenge, method, ...rest] =
    values;
  const [nonce, jkt, claims, resource, expiresAt, grantId] = rest;
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
    grant_id: grantId,
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
