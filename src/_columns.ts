/**
 * The columns of the codes table and of its tombstone table, defined once:
 * the DDL, the store's statements, migrate's check and the positional
 * decoding of an entry are all derived from these lists.
 *
 * @module
 */

import { SHA256_BASE64URL } from "./_grammar.ts";

// The tables' own check of a SHA-256 base64url value: the same pattern as
// the store's (it holds no quote).
const BASE64URL_43 = `'${SHA256_BASE64URL.source}'`;

/** A column: its name, its type and constraints, and where it comes from. */
export interface Column {
  /** The column's name. */
  readonly name: string;
  /** Its type and constraints, as in `CREATE TABLE`. */
  readonly ddl: string;
  /** The version that added it (`ALTER TABLE ... ADD COLUMN`), if not 0.1. */
  readonly since?: string;
  /** A comment for the DDL. */
  readonly comment?: string;
  /** Whether a `CodeRow` holds it (`inserted_at` is the server's). */
  readonly row: boolean;
}

/** The codes table, in table order. */
export const CODE_TABLE: readonly Column[] = [
  {
    name: "code_hash",
    ddl: `text COLLATE "C" PRIMARY KEY CHECK (code_hash ~ ${BASE64URL_43})`,
    comment:
      'base64url SHA-256 of the code; "C" collation: byte order, no locale cost.',
    row: true,
  },
  {
    name: "client_id",
    ddl: "text NOT NULL CHECK (client_id <> '')",
    row: true,
  },
  { name: "subject", ddl: "text NOT NULL CHECK (subject <> '')", row: true },
  {
    name: "redirect_uri",
    ddl: "text NOT NULL CHECK (redirect_uri <> '')",
    row: true,
  },
  { name: "scope", ddl: "text[] NOT NULL", row: true },
  {
    name: "code_challenge",
    ddl: `text NOT NULL CHECK (code_challenge ~ ${BASE64URL_43})`,
    row: true,
  },
  {
    name: "code_challenge_method",
    ddl: "text NOT NULL CHECK (code_challenge_method = 'S256')",
    row: true,
  },
  { name: "nonce", ddl: "text", row: true },
  { name: "dpop_jkt", ddl: "text", row: true },
  {
    name: "claims",
    ddl: "jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(claims) = 'object')",
    row: true,
  },
  { name: "resource", ddl: "text[] NOT NULL DEFAULT '{}'", row: true },
  { name: "expires_at", ddl: "timestamptz NOT NULL", row: true },
  {
    name: "inserted_at",
    ddl: "timestamptz NOT NULL DEFAULT now()",
    row: false,
  },
  {
    name: "grant_id",
    ddl: "text",
    since: "0.2",
    comment: "the grant (token family) a code starts, for reuse detection.",
    row: true,
  },
  {
    name: "context",
    ddl: "jsonb NOT NULL DEFAULT '{}' " +
      "CHECK (jsonb_typeof(context) = 'object')",
    since: "0.2",
    comment:
      "what else the token endpoint needs (an OpenID provider's acr, sid...).",
    row: true,
  },
];

/** The tombstone table (`<table>_spent`, 0.2), in table order. */
export const SPENT_TABLE: readonly Column[] = [
  {
    name: "code_hash",
    ddl: `text COLLATE "C" PRIMARY KEY CHECK (code_hash ~ ${BASE64URL_43})`,
    row: true,
  },
  { name: "client_id", ddl: "text NOT NULL", row: true },
  { name: "subject", ddl: "text NOT NULL", row: true },
  { name: "redirect_uri", ddl: "text NOT NULL", row: true },
  { name: "code_challenge", ddl: "text NOT NULL", row: true },
  { name: "grant_id", ddl: "text", row: true },
  { name: "spent_at", ddl: "timestamptz NOT NULL", row: true },
  { name: "expires_at", ddl: "timestamptz NOT NULL", row: true },
];

/** The names of a table's columns. */
export function names(table: readonly Column[]): string[] {
  return table.map((column) => column.name);
}

/**
 * The tombstone's columns that come from the code's row as they are (the
 * others, `spent_at` and `expires_at`, are the time of redemption and the
 * retention).
 */
export const TOMBSTONE_FROM_ROW: readonly string[] = names(SPENT_TABLE)
  .filter((name) => name !== "spent_at" && name !== "expires_at");
