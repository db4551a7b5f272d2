/**
 * The `table` option: validated once, then only ever used as an identifier.
 *
 * @module
 */

/** The table used when none is given. */
export const DEFAULT_TABLE = "authorization_codes";

// Lower-case so the quoted and the unquoted spelling name the same table.
// 63 bytes is PostgreSQL's identifier limit (NAMEDATALEN - 1); a table name
// keeps 6 of them for the `_spent` suffix of its tombstone table.
const SCHEMA = "[a-z_][a-z0-9_]{0,62}";
const TABLE = "[a-z_][a-z0-9_]{0,56}";
const TABLE_NAME = new RegExp(`^(?:(${SCHEMA})\\.)?(${TABLE})$`);

/** A validated, possibly schema-qualified, table name. */
export interface TableName {
  /** The name as given, e.g. `"auth.codes"`; postgres.js quotes each part. */
  readonly qualified: string;
  /** The schema, if the name was qualified. */
  readonly schema: string | undefined;
  /** The table's own name, e.g. `"codes"`. */
  readonly name: string;
  /** The tombstone table beside it, e.g. `"auth.codes_spent"`. */
  readonly spent: string;
}

/**
 * Validates the `table` option: one or two dot-separated parts (`table` or
 * `schema.table`), each a lower-case SQL identifier: at most 57 characters
 * for the table (its tombstone table adds `_spent`), 63 for the schema.
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
        '"authorization_codes" or "auth.codes" (letters, digits and _; ' +
        "at most 57 characters for the table, 63 for the schema)",
    );
  }
  const [qualified, schema, name] = match as unknown as [
    string,
    string | undefined,
    string,
  ];
  return {
    qualified,
    schema,
    name,
    spent: schema ? `${schema}.${name}_spent` : `${name}_spent`,
  };
}

/**
 * A validated name (`table` or `schema.table`, or an index name), quoted
 * for statement text: each part in double quotes. The parts are
 * `[a-z0-9_]`, so quoting needs no escaping.
 */
export function quoteName(name: string): string {
  return name.split(".").map((part) => `"${part}"`).join(".");
}
