/**
 * The driver seam: a pool of postgres.js 3.4 and one of 4.x work side by
 * side through every public function (and type-check, which `deno test`
 * checks), anything else is refused when it is handed over, with the
 * supported versions named, and a connection string a major cannot take
 * is refused with what to write instead, never a confusing server error.
 */

import {
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import postgres3 from "postgres3";
import postgres4 from "postgres";
import {
  createCodeStore,
  DatabaseUnavailableError,
  migrate,
  MissingRepositoryError,
  type PostgresPool,
  purgeExpired,
  type Repository,
} from "../mod.ts";
import {
  databaseUrl,
  grant,
  IN_A_MINUTE,
  randomCode,
  testDatabase,
} from "./support/database.ts";

/**
 * Asserts that `createCodeStore`, `migrate` and `purgeExpired` each refuse
 * `pool` with a `TypeError` whose message says each of `words`.
 */
async function refusedEverywhere(
  pool: PostgresPool,
  words: readonly string[],
  what: string,
) {
  for (
    const handOver of [
      () => createCodeStore(pool),
      () => migrate(pool),
      () => purgeExpired(pool),
    ]
  ) {
    let error: unknown;
    try {
      await handOver();
    } catch (e) {
      error = e;
    }
    assertInstanceOf(error, TypeError, what);
    for (const word of words) assertStringIncludes(error.message, word, what);
  }
}

Deno.test("a postgres.js 3.4.10 pool and a 4.2.0 pool run every public function side by side", async () => {
  // What a user program writes, typed by each major's own `Sql`.
  const three: postgres3.Sql = postgres3(databaseUrl(), {
    onnotice: () => {},
    max: 2,
  });
  const four: postgres4.Sql = postgres4(databaseUrl(), {
    onnotice: () => {},
    max: 2,
  });
  // A table of its own, in a schema dropped at the end; each major's
  // migrate runs on it (the first creates it).
  await using t = await testDatabase();
  const table = `${t.schema}.driver`;
  try {
    for (const [name, pool] of [["3.4", three], ["4", four]] as const) {
      // Every public function that takes a pool, with either major's type.
      await migrate(pool, { table });
      const typed: PostgresPool = pool;
      const lazy: Repository = () => pool;
      for (
        const store of [
          createCodeStore(typed, { table }),
          createCodeStore(lazy, { table }),
        ]
      ) {
        const code = randomCode();
        await store.put({
          code,
          data: grant({ subject: `user-${name}`, grantId: "g-1" }),
          expiresAt: IN_A_MINUTE,
        });
        assertEquals((await store.take(code))?.data.subject, `user-${name}`);
        assertEquals(await store.take(code), null);
        assertEquals((await store.spent(code))?.grantId, "g-1");
        assertEquals(await store.revokeGrant("g-1"), 0);
      }
      const expired = randomCode();
      await createCodeStore(pool, { table }).put({
        code: expired,
        data: grant(),
        expiresAt: 1,
      });
      assertEquals((await purgeExpired(pool, { table })).codes, 1, name);
    }
  } finally {
    await Promise.all([three.end({ timeout: 5 }), four.end({ timeout: 5 })]);
  }
});

Deno.test("`createCodeStore`, `migrate` and `purgeExpired` refuse what is not a postgres.js 3.4 or 4.x pool, naming the supported versions", async () => {
  const real = postgres4(databaseUrl(), { max: 1 });
  try {
    const lookAlikes: [string, unknown][] = [
      ["a plain object", { unsafe() {}, options: {} }],
      [
        "a function with a pool's methods",
        Object.assign(() => {}, {
          unsafe: () => {},
          begin: () => {},
          json: () => {},
          end: () => Promise.resolve(),
          options: { host: ["localhost"], port: [5432] },
        }),
      ],
      [
        // A 4.x pool whose queries lack what the store reads.
        "a wrapper of a 4.x pool",
        Object.assign(
          (...args: never[]) => (real as (...a: never[]) => unknown)(...args),
          {
            unsafe: () => ({}),
            begin: real.begin,
            json: real.json,
            reserve: real.reserve,
            end: real.end,
            options: real.options,
          },
        ),
      ],
      ["node-postgres's Pool", { query() {}, connect() {}, end() {} }],
      ["null", null],
    ];
    for (const [what, value] of lookAlikes) {
      await refusedEverywhere(value as PostgresPool, ["3.4", "4."], what);
    }
    // A function that is not a pool: migrate and purgeExpired refuse it;
    // to createCodeStore it is a repository function, which fails closed
    // when it returns no pool.
    const notAPool = (() => undefined) as unknown as PostgresPool;
    await assertRejects(() => migrate(notAPool), TypeError, "3.4");
    await assertRejects(() => purgeExpired(notAPool), TypeError, "3.4");
    const store = createCodeStore(notAPool);
    await assertRejects(() => store.take(randomCode()), MissingRepositoryError);
  } finally {
    await real.end({ timeout: 5 });
  }
});

Deno.test("postgres.js 3.4: a connection parameter it would send to the server as a setting is refused with what to write instead", async () => {
  const url = new URL(databaseUrl());
  for (
    const [parameter, value, advice] of [
      ["channel_binding", "require", "postgres.js 4"],
      ["sslrootcert", "/etc/ssl/certs/ca-certificates.crt", "ssl: { ca }"],
    ] as const
  ) {
    url.search = `?${parameter}=${value}`;
    const pool = postgres3(url.href, { max: 1, onnotice: () => {} });
    try {
      // The control: 3.4 sends it to the server as a setting, refused
      // with 42704 ("unrecognized configuration parameter").
      const raw = await pool`select 1`.catch((error) => error.code);
      assertEquals(raw, "42704", parameter);
      await refusedEverywhere(pool, [parameter, advice], parameter);
    } finally {
      await pool.end({ timeout: 5 });
    }
  }
});

Deno.test("postgres.js 3.4 ignores PGSSLMODE: a pool made with it set and no ssl is refused, not left in the clear", async () => {
  const program = `
    import postgres3 from "postgres3";
    import { createCodeStore } from "${new URL("../mod.ts", import.meta.url)}";
    const pool = postgres3(Deno.env.get("DATABASE_URL"), { max: 1 });
    try {
      createCodeStore(pool);
      console.log("accepted");
    } catch (error) {
      console.log(error.message);
    }
    await pool.end();
  `;
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", program],
    env: { DATABASE_URL: databaseUrl(), PGSSLMODE: "require" },
  }).output();
  const out = new TextDecoder().decode(run.stdout);
  assertEquals(run.code, 0, new TextDecoder().decode(run.stderr));
  assertStringIncludes(out, "PGSSLMODE");
  assertStringIncludes(out, "sslmode");
});

Deno.test("postgres.js 4 takes channel_binding and PGSSLMODE itself: a server that cannot meet them is a clear DatabaseUnavailableError", async () => {
  // This server has no TLS and trusts its clients: channel binding cannot
  // be had, and sslmode=require cannot be met.
  const url = new URL(databaseUrl());
  url.search = "?channel_binding=require";
  const pool = postgres4(url.href, { max: 1, onnotice: () => {} });
  try {
    const store = createCodeStore(pool);
    const error = await assertRejects(
      () => store.take(randomCode()),
      DatabaseUnavailableError,
    );
    assertEquals(error.reason, "CHANNEL_BINDING_REQUIRED");
    assertEquals(error.sent, false);
  } finally {
    await pool.end({ timeout: 5 });
  }
  const program = `
    import postgres from "postgres";
    import { createCodeStore } from "${new URL("../mod.ts", import.meta.url)}";
    const pool = postgres(Deno.env.get("DATABASE_URL"), { max: 1 });
    const error = await createCodeStore(pool).take("a".repeat(43)).catch((e) => e);
    console.log(error.reason);
    await pool.end();
  `;
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", program],
    env: { DATABASE_URL: databaseUrl(), PGSSLMODE: "require" },
  }).output();
  assertEquals(
    new TextDecoder().decode(run.stdout).trim(),
    "SSL_NOT_SUPPORTED",
    new TextDecoder().decode(run.stderr),
  );
});
