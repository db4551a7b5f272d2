/**
 * The `table` option: validated once, then only ever used as an identifier.
 *
 * @module
 */

/** The table used when none is given. */
export const DEFAULT_TABLE = "authorization_codes";

// Lower-case so the quoted and the unquoted spelling name the same table;
// 63 bytes is PostgreSQL's identifier limit (NAMEDATALEN - 1).
const PART = "[a-z_][a-z0-9_]{0,62}";
const TABLE_NAME = new RegExp(`^(?:(${PART})\\.)?(${PART})$`);

/** A validated, possibly schema-qualified, table name. */
export interface TableName {
  /** The name as given, e.g. `"auth.codes"`; postgres.js quotes each part. */
  readonly qualified: string;
  /** The schema, if the name was qualified. */
  readonly schema: string | undefined;
  /** The table's own name, e.g. `"codes"`. */
  readonly name: string;
}

/**
 * Validates the `table` option: one or two dot-separated parts (`table` or
 * `schema.table`), each a lower-case SQL identifier of at most 63 characters.
 *
 * @param table The option's value, or `undefined` for the default.
 * @returns The parsed name.
 * @throws {TypeError} If the name is not such an identifier.
 */
export function parseTableName(table: unknown = DEFAULT_TABLE): TableName {
  const match = typeof table === "string" ? TABLE_NAME.exec(table) : null;
  if (!match) {
    throw new TypeError(
      "options.table must be a lower-case SQL identifier such as " +
        '"authorization_codes" or "auth.codes" (letters, digits and _, ' +
        "at most 63 characters per part)",
    );
  }
  return { qualified: match[0], schema: match[1], name: match[2]! };
}
