import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import {
  createCodeStore,
  migrate,
  migrationSql,
  type NewCode,
} from "../mod.ts";
import { CODE_COLUMNS } from "../src/schema.ts";
import {
  connect,
  end,
  grant,
  randomCode,
  testDatabase,
} from "./support/database.ts";

const newCode = (): NewCode => ({
  code: randomCode(),
  data: grant(),
  expiresAt: Math.floor(Date.now() / 1000) + 60,
});

Deno.test("`migrate()` twice, or from four pools at once, is harmless", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const input = newCode();
  await store.put(input);
  await migrate(t.sql, { table: t.table });

  const pools = Array.from({ length: 4 }, () => connect({ max: 1 }));
  try {
    const table = `${t.schema}.concurrent`;
    await Promise.all(pools.map((sql) => migrate(sql, { table })));
    await Promise.all(pools.map((sql) => migrate(sql, { table })));
    const fresh = createCodeStore(t.sql, { table });
    const other = newCode();
    await fresh.put(other);
    assertEquals((await fresh.take(other.code))?.data.subject, "user-42");
  } finally {
    await Promise.all(pools.map(end));
  }
  assertEquals((await store.take(input.code))?.data.subject, "user-42");
});

Deno.test("`migrate()` creates the table `migrationSql()` describes", async () => {
  await using t = await testDatabase();
  const { sql } = t;
  const columns = await sql<
    { name: string; type: string; nullable: string; default: string | null }[]
  >`
    select column_name as name, udt_name as type, is_nullable as nullable,
           column_default as default
    from information_schema.columns
    where table_schema = ${t.schema} and table_name = 'codes'
    order by ordinal_position
  `;
  assertEquals(columns.map((c) => c.name), [...CODE_COLUMNS, "inserted_at"]);
  const types = Object.fromEntries(columns.map((c) => [c.name, c.type]));
  assertEquals(types.scope, "_text");
  assertEquals(types.resource, "_text");
  assertEquals(types.claims, "jsonb");
  assertEquals(types.expires_at, "timestamptz");
  assertEquals(types.inserted_at, "timestamptz");
  const nullable = columns.filter((c) => c.nullable === "YES").map((c) =>
    c.name
  );
  assertEquals(nullable, ["nonce", "dpop_jkt"]);
  assertStringIncludes(
    columns.find((c) => c.name === "inserted_at")?.default ?? "",
    "now()",
  );

  const [{ key }] = await sql<[{ key: string }]>`
    select a.attname as key
    from pg_index i join pg_attribute a
      on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
    where i.indrelid = ${t.table}::regclass and i.indisprimary
  `;
  assertEquals(key, "code_hash");
  const indexes = await sql<{ def: string }[]>`
    select indexdef as def from pg_indexes
    where schemaname = ${t.schema} and tablename = 'codes'
  `;
  assert(indexes.some((i) => /\(expires_at\)/.test(i.def)), "expiry index");

  // The constraints hold even for rows written around the store.
  const insert = (hash: string, method: string) =>
    sql`
      insert into ${sql(t.table)} (code_hash, client_id, subject, redirect_uri,
        scope, code_challenge, code_challenge_method, expires_at)
      values (${hash}, 'c', 's', 'https://c.example/', '{}',
        'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', ${method}, now())
    `;
  const hash = "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0";
  for (const [h, method] of [[hash, "plain"], ["short", "S256"]]) {
    const error = await assertRejects(() => insert(h!, method!));
    assertEquals((error as { code?: string }).code, "23514");
  }
  await insert(hash, "S256");
});

Deno.test("the default table name works, found through the search path", async () => {
  await using t = await testDatabase();
  const sql = connect({ connection: { search_path: t.schema } });
  try {
    await migrate(sql);
    const store = createCodeStore(sql);
    const input = newCode();
    await store.put(input);
    const [{ n }] = await t.sql<[{ n: number }]>`
      select count(*)::int as n
      from ${t.sql(`${t.schema}.authorization_codes`)}
    `;
    assertEquals(n, 1);
    assert(await store.take(input.code));
  } finally {
    await end(sql);
  }
});

Deno.test("a hostile `table` option is refused before any SQL", async () => {
  await using t = await testDatabase();
  const hostile = [
    "",
    " ",
    "codes; drop table codes",
    'codes"; drop table codes; --',
    "codes --",
    "a.b.c",
    ".codes",
    "codes.",
    "Codes",
    "1codes",
    "co-des",
    "codes\0",
    "códes",
    "a".repeat(64),
    `${"a".repeat(64)}.codes`,
    "pg_catalog.pg_class; select 1",
  ];
  for (const table of [...hostile, 42, null, {}, ["codes"]]) {
    // deno-lint-ignore no-explicit-any
    const options = { table } as any;
    assertThrows(() => createCodeStore(t.sql, options), TypeError);
    assertThrows(() => migrationSql(options), TypeError);
    await assertRejects(() => migrate(t.sql, options), TypeError);
  }
  // The longest valid name is accepted.
  const longest = `${t.schema}.${"a".repeat(63)}`;
  await migrate(t.sql, { table: longest });
  const store = createCodeStore(t.sql, { table: longest });
  const input = newCode();
  await store.put(input);
  assert(await store.take(input.code));
});

Deno.test("`migrate()` passes the database error through when the schema is missing", async () => {
  await using t = await testDatabase();
  const error = await assertRejects(() =>
    migrate(t.sql, { table: "no_such_schema_x1.codes" })
  );
  assertEquals((error as { code?: string }).code, "3F000"); // invalid_schema_name
});

Deno.test("`migrationSql()` is idempotent DDL quoting the table name", () => {
  const ddl = migrationSql({ table: "auth.codes" });
  assertStringIncludes(ddl, 'CREATE TABLE IF NOT EXISTS "auth"."codes"');
  assertStringIncludes(
    ddl,
    'CREATE INDEX IF NOT EXISTS "codes_expires_at_idx" ON "auth"."codes"',
  );
  assertStringIncludes(ddl, "CHECK (code_challenge_method = 'S256')");
  assertEquals(
    migrationSql(),
    migrationSql({ table: "authorization_codes" }),
  );
});
