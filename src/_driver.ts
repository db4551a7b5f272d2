/**
 * Where the store leans on postgres.js 3.4.9's behaviour beyond its typed
 * API, or works around one of its defects. Each has a test that shows it.
 *
 * @module
 */

const utf8 = new TextDecoder();

/**
 * The text of every column of a raw result (`.raw()`), skipping holes.
 * Statements read raw bytes, so no type parser and no `transform` of the
 * caller's pool touches a value (a value transform would rewrite hashes,
 * and keys inside claims). postgres.js 3.4.9 does not reset its row
 * counter when a statement fails while its rows arrive (a server error
 * mid-result, a connection lost mid-result), so the next result on that
 * connection starts with empty slots (porsager/postgres #1119, #1181); the
 * rows after them are the statement's own.
 *
 * @param result A raw result.
 * @returns Its rows, each column as text or `null`.
 */
export function decode(
  result: readonly (readonly (Uint8Array | null)[] | undefined)[],
): (string | null)[][] {
  const rows: (string | null)[][] = [];
  for (const columns of result) {
    if (!columns) continue;
    rows.push(
      columns.map((bytes) => bytes === null ? null : utf8.decode(bytes)),
    );
  }
  return rows;
}
