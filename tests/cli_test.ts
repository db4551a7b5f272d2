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
import { cli, type CliRun } from "./support/cli.ts";
import { EmbeddedPostgres } from "../tools/embedded_postgres.ts";

/** One line on stderr, nothing on stdout, no usage. */
function assertOneLineError(run: CliRun, label: string): void {
  assertEquals(run.out, "", `${label}: stdout`);
  assertEquals(run.err.trimEnd().split("\n").length, 1, `${label}: ${run.err}`);
  assertMatch(run.err, /^error: /, label);
  assert(!run.err.includes("Usage:"), `${label}: the usage was reprinted`);
}

Deno.test("`cli --help`, `-h` and `help` print the usage on stdout and exit 0", async () => {
  for (
    const args of [["--help"], ["-h"], ["help"], ["migrate", "--help"], [
      "stats",
      "--tabel",
      "x",
      "-h",
    ]]
  ) {
    const run = await cli(args);
    assertEquals(run.code, 0, args.join(" "));
    assert(run.out.startsWith("Usage: code-store <command>"), run.out);
    assertEquals(run.err, "");
  }
});

Deno.test("`cli` without a command prints the usage on stderr and exits 2", async () => {
  for (const args of [[], ["--json"], ["--table", "auth.codes"]]) {
    const run = await cli(args, { DATABASE_URL: databaseUrl() });
    assertEquals(run.code, 2, args.join(" "));
    assertEquals(run.out, "");
    assert(run.err.startsWith("Usage: code-store <command>"), run.err);
  }
});

Deno.test("`cli` with an unknown command says which in one line and exits 2", async () => {
  const run = await cli(["frobnicate"], { DATABASE_URL: databaseUrl() });
  assertEquals(run.code, 2);
  assertOneLineError(run, "frobnicate");
  assertStringIncludes(run.err, 'unknown command "frobnicate"');
});

Deno.test("`cli` with a bad option or option value says what in one line and exits 2", async () => {
  const cases = [
    [["migrate", "--tabel", "x"], "unknown option --tabel"],
    [["migrate", "-x"], "unknown option -x"],
    [["migrate", "--table"], "--table needs a value"],
    [["stats", "--json=yes"], "--json takes no value"],
    [["migrate", "extra"], 'migrate takes no argument, got "extra"'],
    [["migrate", "--table", "Bad;Name"], "--table must be"],
    [["purge", "--batch-size", "0"], "--batch-size must be an integer"],
    [["purge", "--batch-size", "1e3"], "--batch-size must be an integer"],
    [["purge", "--batch-size", "many"], "--batch-size must be an integer"],
  ] as const;
  for (const [args, message] of cases) {
    const run = await cli([...args], { DATABASE_URL: databaseUrl() });
    assertEquals(run.code, 2, args.join(" "));
    assertOneLineError(run, args.join(" "));
    assertStringIncludes(run.err, message);
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

Deno.test("`cli` with a malformed DATABASE_URL names what is wrong in one line, quotes none of the password, and exits 2", async () => {
  // Each URL holds SECRET (its password, or what may be part of it).
  const cases = [
    ["mysql://app:SECRET@127.0.0.1:5432/db", "has the scheme mysql://"],
    ["app:SECRET@127.0.0.1:5432/db", "must start with postgres://"],
    ["postgres://app:SECRET@127.0.0.1:54x2/db", "port that is not a number"],
    ["postgres://app:SECRET@127.0.0.1:99999/db", "port out of range"],
    ["postgres://app:SECRET@127.0.0.1:0/db", "port out of range"],
    ["postgres://app:SECRET@127.0.0.1:/db", "empty port"],
    ["postgres://app:SECRET@:5432/db", "empty host"],
    ["postgres://app:SECRET@/db", "empty host"],
    ["postgres://app:SECRET@db^host:5432/db", "not a valid host name"],
    ["postgres://app:SECRET@db host/db", "not a valid host name"],
    ["postgres://app:SECRET@::1:5432/db", "more than one :"],
    ["postgres://app:SECRET@[::g]:5432/db", "not a valid IPv6 address"],
    [
      "postgres://app:SECRET@h1:5432,h2:x/db",
      "port that is not a number (host 2 of 2)",
    ],
    ["postgres://app:100%SECRET@127.0.0.1/db", "password with a %"],
    ["postgres://a%zzp:SECRET@127.0.0.1/db", "user name with a %"],
    ["postgres://app:SECRET@127.0.0.1/d%zzb", "database name with a %"],
    [
      "postgres://app:SECRET@127.0.0.1/db/x",
      "database name with an unencoded /",
    ],
    ["postgres://app:SECRET@127.0.0.1/db#x", "unencoded #"],
    ["postgres://app:SEC@RET@127.0.0.1:5432/db", "unencoded @"],
    // A / ? or # in the password cuts the URL: what follows looks like a
    // host, a port or a path.
    ["postgres://app:SEC/RET@127.0.0.1:5432/db", "unencoded / ? or #"],
    ["postgres://app:SEC#RET@127.0.0.1:5432/db", "unencoded / ? or #"],
    ["postgres://app:SEC?RET@127.0.0.1:5432/db", "unencoded / ? or #"],
    ["postgres://app:1234/SECRET@127.0.0.1:5432/db", "unencoded / ? or #"],
    ["postgres://app:99#SECRET@db.example.invalid/db", "unencoded / ? or #"],
  ] as const;
  for (const [url, message] of cases) {
    const run = await cli(["stats"], { DATABASE_URL: url });
    assertEquals(run.code, 2, `${url}: ${run.err}`);
    assertOneLineError(run, url);
    assertStringIncludes(run.err, "DATABASE_URL");
    assertStringIncludes(run.err, message, url);
    for (const part of ["SECRET", "SEC", "RET"]) {
      assert(
        !run.err.includes(part),
        `${url} printed its password: ${run.err}`,
      );
    }
  }
});

Deno.test("`cli` with PG* variables and a bad PGPORT says so in one line and exits 2", async () => {
  const run = await cli(["stats"], {
    PGHOST: "127.0.0.1",
    PGPORT: "54x2",
    PGPASSWORD: "SECRET",
  });
  assertEquals(run.code, 2, run.err);
  assertOneLineError(run, "PGPORT");
  assertStringIncludes(run.err, "PGPORT is not a port number");
  assert(!run.err.includes("SECRET"));
});

Deno.test("`deno install` makes a `code-store` command that needs only network and environment access", async () => {
  // The README's line installs jsr:@attesto/code-store/cli; jsr.io cannot
  // be reached here, so this installs the same module from this checkout,
  // with its deno.json, as a user would from a clone.
  const root = await Deno.makeTempDir({ prefix: "attesto-install-" });
  try {
    const repository = new URL("../", import.meta.url);
    const install = await new Deno.Command(Deno.execPath(), {
      args: [
        "install",
        "-g",
        "--root",
        root,
        "--allow-net",
        "--allow-env",
        "--config",
        new URL("deno.json", repository).pathname,
        "-n",
        "code-store",
        new URL("src/cli.ts", repository).href,
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assertEquals(
      install.code,
      0,
      new TextDecoder().decode(install.stderr),
    );
    const script = await Deno.readTextFile(`${root}/bin/code-store`);
    assertStringIncludes(script, "--allow-net --allow-env ");
    assert(!/--allow-(all|read|write|run|ffi|sys)|\s-A\s/.test(script));

    const command = (args: string[]) =>
      new Deno.Command(`${root}/bin/code-store`, {
        args,
        cwd: root,
        env: { DATABASE_URL: databaseUrl() },
      }).output();
    const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    const help = await command(["--help"]);
    assertEquals(help.code, 0, decode(help.stderr));
    assert(decode(help.stdout).startsWith("Usage: code-store <command>"));

    await using t = await testDatabase();
    const table = `${t.schema}.installed_codes`;
    const migrated = await command(["migrate", "--table", table]);
    assertEquals(migrated.code, 0, decode(migrated.stderr));
    const stats = await command(["stats", "--table", table, "--json"]);
    assertEquals(stats.code, 0, decode(stats.stderr));
    assertEquals(JSON.parse(decode(stats.stdout)).liveCodes, 0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
