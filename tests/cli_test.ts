/**
 * The command line, run as a process, as scripts would run it: with only
 * the network and environment permissions (it touches no file).
 */

import {
  assert,
  assertEquals,
  assertMatch,
  assertStringIncludes,
} from "@std/assert";
import postgres from "../tools/postgres.ts";
import { createCodeStore } from "../mod.ts";
import {
  databaseUrl,
  grant,
  randomCode,
  testDatabase,
} from "./support/database.ts";
import { cli } from "./support/cli.ts";
import { EmbeddedPostgres } from "../tools/embedded_postgres.ts";

Deno.test("`cli --help` prints the usage and exits 0; a bad command or option exits 2", async () => {
  for (const args of [["--help"], ["-h"], ["help"], []]) {
    const { code, out } = await cli(args);
    assertEquals(code, 0);
    assertStringIncludes(out, "Usage: code-store <command>");
  }
  for (
    const args of [
      ["frobnicate"],
      ["migrate", "--tabel", "x"],
      ["migrate", "extra"],
      ["migrate", "--table", "Bad;Name"],
      ["purge", "--batch-size", "0"],
    ]
  ) {
    const { code, err } = await cli(args, { DATABASE_URL: databaseUrl() });
    assertEquals(code, 2, args.join(" "));
    assertStringIncludes(err, "error:");
  }
});

Deno.test("`cli` without a database configured exits 2 and says how to configure one", async () => {
  const { code, err } = await cli(["stats"]);
  assertEquals(code, 2);
  assertStringIncludes(err, "DATABASE_URL");
  assertStringIncludes(err, "PGHOST");
});

Deno.test("`cli` errors never print the password: refused, silent, unknown host, wrong password, missing database", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const refused = closed.addr.port;
  closed.close();
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) held.push(conn);
  })();
  await using server = await EmbeddedPostgres.create({
    password: "right-pw-3",
  });
  try {
    const secret = "s3cret-pw";
    const cases = [
      [`postgres://app:${secret}-1@127.0.0.1:${refused}/db`, "ECONNREFUSED"],
      [
        `postgres://app:${secret}-2@127.0.0.1:${silent.addr.port}/db`,
        "CONNECT_TIMEOUT",
      ],
      [`postgres://app:${secret}-3@no-such-host.invalid:5432/db`, "ENOTFOUND"],
      [
        `postgres://postgres:${secret}-4@127.0.0.1:${server.port}/postgres`,
        "28P01",
      ],
      [
        Object.assign(new URL(server.url), { pathname: "/no_such_db" }).href,
        "3D000",
      ],
    ] as const;
    for (const [url, kind] of cases) {
      const run = await cli(["stats"], {
        DATABASE_URL: url,
        PGCONNECT_TIMEOUT: "1",
      });
      assertEquals(run.code, 1, `${kind}: ${run.err}`);
      assertStringIncludes(run.err, kind);
      for (const text of [run.out, run.err]) {
        assert(!text.includes(secret), `${kind} printed the password`);
        assert(!text.includes("right-pw-3"), `${kind} printed the password`);
      }
    }
  } finally {
    silent.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  }
});

Deno.test("`cli migrate`, `stats` and `purge` work on a table, from DATABASE_URL or PG* variables", async () => {
  await using t = await testDatabase();
  const table = `${t.schema}.cli_codes`;
  const url = new URL(databaseUrl());
  const pg = {
    PGHOST: url.hostname,
    PGPORT: url.port || "5432",
    PGDATABASE: url.pathname.slice(1),
    PGUSER: decodeURIComponent(url.username),
    ...(url.password ? { PGPASSWORD: decodeURIComponent(url.password) } : {}),
  };

  const migrated = await cli(["migrate", "--table", table], pg);
  assertEquals(migrated.code, 0, migrated.err);
  assertEquals(migrated.out.trim(), `migrated ${table} and ${table}_spent`);

  const store = createCodeStore(t.sql, { table });
  const codes = Array.from({ length: 5 }, () => randomCode());
  for (const [i, code] of codes.entries()) {
    await store.put({ code, data: grant(), expiresAt: i < 2 ? 1 : 4102444800 });
  }
  await store.take(codes[4]!);

  const stats = await cli(["stats", "--table", table, "--json"], {
    DATABASE_URL: databaseUrl(),
  });
  assertEquals(stats.code, 0, stats.err);
  const parsed = JSON.parse(stats.out);
  assertEquals({ ...parsed, oldestCodeAgeSeconds: 0 }, {
    table,
    liveCodes: 2,
    expiredCodes: 2,
    oldestCodeAgeSeconds: 0,
    tombstones: 1,
    expiredTombstones: 0,
  });
  assert(parsed.oldestCodeAgeSeconds >= 0);

  const text = await cli(["stats", "--table", table], pg);
  assertMatch(text.out, /liveCodes\s+2/);

  const purged = await cli(["purge", "--table", table], {
    DATABASE_URL: databaseUrl(),
  });
  assertEquals(purged.code, 0, purged.err);
  assertEquals(
    purged.out.trim(),
    "purged 2 expired codes and 0 expired tombstones",
  );

  const missing = await cli(["stats", "--table", `${t.schema}.nope`], pg);
  assertEquals(missing.code, 1);
  assertStringIncludes(missing.err, "run the migrate command first");
});

Deno.test("`cli replication` on a server without standbys says it cannot see one and exits 4", async () => {
  const text = await cli(["replication"], { DATABASE_URL: databaseUrl() });
  assertEquals(text.code, 4, text.err);
  assertStringIncludes(text.out, "No standby streams from this server");
  const json = await cli(["replication", "--json"], {
    DATABASE_URL: databaseUrl(),
  });
  assertEquals(json.code, 4, json.err);
  const report = JSON.parse(json.out);
  assertEquals(report.risk, "unknown");
  assertEquals(report.standbys, []);
});

Deno.test("`cli replication` with synchronous replication configured and no standby connected exits 5: every commit would wait", async () => {
  await using server = await EmbeddedPostgres.create({
    settings: { synchronous_commit: "on" },
  });
  const admin = postgres(server.url, { max: 1, onnotice: () => {} });
  try {
    await admin`alter system set synchronous_standby_names = 'standby_1'`;
    await admin`select pg_reload_conf()`;
    // The reload is asynchronous: wait until a session sees it.
    for (let seen = ""; seen !== "standby_1";) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      const [row] = await admin<[{ names: string }]>`
        select current_setting('synchronous_standby_names') as names
      `;
      seen = row.names;
    }
    const run = await cli(["replication", "--json"], {
      DATABASE_URL: server.url,
    });
    assertEquals(run.code, 5, run.err);
    assertEquals(JSON.parse(run.out).waitingForStandby, true);
  } finally {
    await admin.end({ timeout: 5 });
  }
});

Deno.test("`cli` with a malformed password-bearing DATABASE_URL exits 2 and prints nothing of the password", async () => {
  // Passwords with an unencoded / or #: the URL's structure breaks there.
  const cases = [
    ["postgres://app:s3cr/et-pass-1@127.0.0.1:5432/db", [
      "s3cr/et-pass-1",
      "et-pass-1",
    ]],
    ["postgres://app:s3cr#et-pass-2@127.0.0.1:5432/db", [
      "s3cr#et-pass-2",
      "et-pass-2",
    ]],
    ["postgres://app:1234/5678-pass-3@127.0.0.1:5432/db", ["5678-pass-3"]],
    ["postgres://app:99#x-pass-4@db.example.invalid/db", ["x-pass-4"]],
  ] as const;
  for (const [url, secrets] of cases) {
    const run = await cli(["stats"], { DATABASE_URL: url });
    assertEquals(run.code, 2, `${run.out}${run.err}`);
    assertStringIncludes(run.err, "DATABASE_URL");
    for (const secret of secrets) {
      assert(
        !run.out.includes(secret) && !run.err.includes(secret),
        `the output holds part of the password: ${run.err}`,
      );
    }
  }
});
