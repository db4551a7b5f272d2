import {
  assert,
  assertEquals,
  assertRejects,
  assertStrictEquals,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import {
  createCodeStore,
  DatabaseError,
  hashCode,
  migrate,
  migrationSql,
  type NewCode,
} from "../mod.ts";
import { CODE_COLUMNS } from "../src/schema.ts";
import postgres from "../tools/postgres.ts";
import {
  connect,
  databaseUrl,
  end,
  failMidResult,
  grant,
  orHung,
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

Deno.test("`migrate()` at every start sends no notices for what already exists", async () => {
  await using t = await testDatabase();
  const notices: unknown[] = [];
  const sql = connect({ max: 1, onnotice: (notice) => notices.push(notice) });
  try {
    await migrate(sql, { table: t.table });
    await migrate(sql, { table: t.table, timeoutMs: Infinity });
    // The session's own setting is untouched: the pool still gets notices.
    await sql`do $$ begin raise notice 'still heard'; end $$`;
  } finally {
    await end(sql);
  }
  assertEquals(
    notices.map((n) => (n as { message: string }).message),
    ["still heard"],
  );
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
  // grant_id and context came in 0.2 and are added after inserted_at, in
  // fresh and in upgraded tables alike.
  assertEquals(columns.map((c) => c.name), [
    ...CODE_COLUMNS.filter((c) => c !== "grant_id" && c !== "context"),
    "inserted_at",
    "grant_id",
    "context",
  ]);
  const types = Object.fromEntries(columns.map((c) => [c.name, c.type]));
  assertEquals(types.scope, "_text");
  assertEquals(types.resource, "_text");
  assertEquals(types.claims, "jsonb");
  assertEquals(types.context, "jsonb");
  assertEquals(types.expires_at, "timestamptz");
  assertEquals(types.inserted_at, "timestamptz");
  const nullable = columns.filter((c) => c.nullable === "YES").map((c) =>
    c.name
  );
  assertEquals(nullable, ["nonce", "dpop_jkt", "grant_id"]);
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
  assert(indexes.some((i) => /\(grant_id\)/.test(i.def)), "grant index");

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
    "a".repeat(58),
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
  // The longest valid name is accepted (57 characters, leaving room for
  // the `_spent` of its tombstone table).
  const longest = `${t.schema}.${"a".repeat(57)}`;
  await migrate(t.sql, { table: longest });
  const store = createCodeStore(t.sql, { table: longest });
  const input = newCode();
  await store.put(input);
  assert(await store.take(input.code));
});

Deno.test("`migrate()` rejects with the database's reason when the schema is missing", async () => {
  await using t = await testDatabase();
  const error = await assertRejects(
    () => migrate(t.sql, { table: "no_such_schema_x1.codes" }),
    DatabaseError,
  );
  assertEquals(error.reason, "3F000"); // invalid_schema_name
  assertEquals(error.operation, "migrate");
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

Deno.test("`migrate()` creates the tombstone table beside the codes table", async () => {
  await using t = await testDatabase();
  const columns = await t.sql<{ name: string; nullable: string }[]>`
    select column_name as name, is_nullable as nullable
    from information_schema.columns
    where table_schema = ${t.schema} and table_name = 'codes_spent'
    order by ordinal_position
  `;
  assertEquals(columns.map((c) => c.name), [
    "code_hash",
    "client_id",
    "subject",
    "redirect_uri",
    "code_challenge",
    "grant_id",
    "spent_at",
    "expires_at",
  ]);
  const indexes = await t.sql<{ def: string }[]>`
    select indexdef as def from pg_indexes
    where schemaname = ${t.schema} and tablename = 'codes_spent'
  `;
  assert(indexes.some((i) => /\(expires_at\)/.test(i.def)), "expiry index");
});

// The DDL of 0.1, before reuse detection (no grant_id, no tombstones).
const DDL_0_1 = (table: string) => `
CREATE TABLE ${table} (
  code_hash text COLLATE "C" PRIMARY KEY CHECK (code_hash ~ '^[A-Za-z0-9_-]{43}$'),
  client_id text NOT NULL CHECK (client_id <> ''),
  subject text NOT NULL CHECK (subject <> ''),
  redirect_uri text NOT NULL CHECK (redirect_uri <> ''),
  scope text[] NOT NULL,
  code_challenge text NOT NULL CHECK (code_challenge ~ '^[A-Za-z0-9_-]{43}$'),
  code_challenge_method text NOT NULL CHECK (code_challenge_method = 'S256'),
  nonce text,
  dpop_jkt text,
  claims jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(claims) = 'object'),
  resource text[] NOT NULL DEFAULT '{}',
  expires_at timestamptz NOT NULL,
  inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX codes_v01_expires_at_idx ON ${table} (expires_at);
`;

Deno.test("`migrate()` upgrades a database made by 0.1: its codes survive and can be redeemed", async () => {
  await using t = await testDatabase();
  const table = `${t.schema}.codes_v01`;
  await t.sql.unsafe(DDL_0_1(table));
  const code = randomCode();
  const hash = hashCode(code);
  await t.sql`
    insert into ${t.sql(table)} (code_hash, client_id, subject, redirect_uri,
      scope, code_challenge, code_challenge_method, expires_at)
    values (${hash}, 's6BhdRkqt3', 'user-42', 'https://client.example.org/cb',
      '{openid}', 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'S256',
      to_timestamp(1900000000))
  `;
  await migrate(t.sql, { table });
  await migrate(t.sql, { table });
  const store = createCodeStore(t.sql, { table });
  const entry = await store.take(code);
  assertEquals(entry?.data.grantId, null);
  assertEquals(entry?.data.subject, "user-42");
  assertEquals((await store.spent(code))?.subject, "user-42");
  const fresh = newCode();
  await store.put({ ...fresh, data: grant({ grantId: "family-1" }) });
  assertEquals((await store.take(fresh.code))?.data.grantId, "family-1");
});

Deno.test("what the README says of the tables is in the DDL `migrationSql()` returns", async () => {
  const readme = await Deno.readTextFile(
    new URL("../README.md", import.meta.url),
  );
  const ddl = migrationSql();
  for (const quoted of ['code_hash text COLLATE "C" PRIMARY KEY']) {
    assertStringIncludes(readme, quoted);
    assertStringIncludes(ddl, quoted);
  }
  assertStringIncludes(
    ddl,
    'CREATE TABLE IF NOT EXISTS "authorization_codes_spent"',
  );
});

Deno.test("`migrate()` is bounded by `timeoutMs`: an upgrade that waits for a lock held elsewhere fails in time instead of stalling", async () => {
  await using t = await testDatabase();
  // Something to upgrade: with the schema current, migrate takes no lock.
  await t.sql`drop index ${t.sql(`${t.schema}.codes_grant_id_idx`)}`;
  const holder = await t.sql.reserve();
  try {
    await holder`begin`;
    await holder`lock table ${holder(t.table)} in access exclusive mode`;
    const outcome = await orHung(
      migrate(t.sql, { table: t.table, timeoutMs: 300 }).then(
        () => "migrated",
        (error) => String(error.code),
      ),
      30_000,
    );
    // The lock wait ends with lock_timeout (55P03), or the client's bound.
    assert(
      outcome === "55P03" || outcome === "ERR_OPERATION_TIMEOUT",
      String(outcome),
    );
  } finally {
    await holder`rollback`;
    holder.release();
  }
  await migrate(t.sql, { table: t.table, timeoutMs: 5000 });
  const [{ n }] = await t.sql<[{ n: number }]>`
    select count(*)::int as n from pg_indexes
    where schemaname = ${t.schema} and indexname = 'codes_grant_id_idx'
  `;
  assertEquals(n, 1, "the upgrade ran once the lock was free");
});

Deno.test("`migrate()` at every start takes no lock: while a reader holds the table, instances start and migrate, and a concurrent `take()` gets its entry before the reader ends", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const input = newCode();
  await store.put(input);
  const reader = await t.sql.reserve();
  const starting = Array.from({ length: 3 }, () => connect({ max: 1 }));
  try {
    // A report, a dump, a long `stats`: ACCESS SHARE until it ends.
    await reader`begin`;
    await reader`select count(*) from ${reader(t.table)}`;
    const migrations = Promise.all(
      starting.map((sql) => migrate(sql, { table: t.table })),
    );
    const taken = store.take(input.code);
    // The reader ends only once both settled, or after a generous bound.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      Promise.all([migrations, taken]).then(([, entry]) => entry),
      new Promise<"stalled">((resolve) => {
        timer = setTimeout(() => resolve("stalled"), 20_000);
      }),
    ]);
    clearTimeout(timer);
    assert(outcome !== "stalled", "migrate or take waited for the reader");
    assertEquals(outcome?.data.subject, "user-42");
  } finally {
    await reader`rollback`;
    reader.release();
    await Promise.all(starting.map(end));
  }
});

Deno.test("`migrate()` and the store run as a role with only USAGE on the schema and SELECT, INSERT, UPDATE, DELETE on the tables", async () => {
  await using t = await testDatabase();
  const role = `attesto_app_${crypto.randomUUID().slice(0, 8)}`;
  const password = crypto.randomUUID();
  const { sql } = t;
  await sql`create role ${sql(role)} login password ${
    sql.unsafe(`'${password}'`)
  }`;
  try {
    await sql`grant usage on schema ${sql(t.schema)} to ${sql(role)}`;
    await sql`
      grant select, insert, update, delete
      on ${sql(t.table)}, ${sql(`${t.table}_spent`)} to ${sql(role)}
    `;
    const url = new URL(databaseUrl());
    url.username = role;
    url.password = password;
    const app = postgres(url.href, { max: 1, onnotice: () => {} });
    try {
      // A statement failing mid-result leaves holes in the next result on
      // its connection (porsager/postgres #1119): migrate still reads the
      // catalog right, and so needs no privilege.
      await failMidResult(app);
      await migrate(app, { table: t.table });
      await migrate(app, { table: t.table });
      const store = createCodeStore(app, { table: t.table });
      const input = newCode();
      await store.put(input);
      assertEquals((await store.take(input.code))?.data.subject, "user-42");
      assertStrictEquals(await store.take(input.code), null);
      assert(await store.spent(input.code));
      // An upgrade needs more: the same role cannot create what is missing.
      const error = await assertRejects(
        () => migrate(app, { table: `${t.schema}.other` }),
        DatabaseError,
      );
      assertEquals(error.reason, "42501");
    } finally {
      await app.end({ timeout: 5 });
    }
  } finally {
    await sql`drop owned by ${sql(role)}`;
    await sql`drop role ${sql(role)}`;
  }
});

Deno.test("with a 57-character table name every index is created, none named like a table", async () => {
  await using t = await testDatabase();
  const name = "c".repeat(57);
  const table = `${t.schema}.${name}`;
  await migrate(t.sql, { table });
  const indexes = await t.sql<{ table: string; index: string }[]>`
    select tablename as table, indexname as index from pg_indexes
    where schemaname = ${t.schema} and tablename like 'ccc%'
    order by 1, 2
  `;
  // Each table's primary key, the codes' expiry and grant indexes, the
  // tombstones' expiry index.
  assertEquals(indexes.length, 5, JSON.stringify(indexes));
  for (const { index } of indexes) {
    assert(index.length <= 63);
    assert(index !== name && index !== `${name}_spent`, index);
  }
  const store = createCodeStore(t.sql, { table });
  const input = newCode();
  await store.put(input);
  assertEquals((await store.take(input.code))?.data.subject, "user-42");
});
