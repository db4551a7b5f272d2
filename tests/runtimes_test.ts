/**
 * The package as JSR publishes it for npm (tools/npm_package.ts: per-file
 * transpile, `@std/crypto` as `@jsr/std__crypto`), run by Node 24 and Bun
 * 1.4 against the test database: every entry point imports, one winner per
 * code across two OS processes, both deadline cases, and the CLI.
 *
 * The runtimes come from `NODE_BIN` and `BUN_BIN` (`.ci/run` installs them
 * from npm); a runtime that is not given is reported as ignored.
 */

import { assert, assertEquals } from "@std/assert";
import { createCodeStore, hashCode } from "../mod.ts";
import {
  buildNpmPackage,
  installNpmDependencies,
  transpileFiles,
} from "../tools/npm_package.ts";
import {
  authorize,
  bursts,
  type IssuedCode,
  redeem,
  serverDatabase,
  startServer,
} from "./support/oauth_servers.ts";
import {
  authorize as oidcAuthorize,
  oidcDatabase,
  token as oidcToken,
} from "./support/oidc_flow.ts";
import {
  authorize as openAuthAuthorize,
  exchange as openAuthExchange,
} from "./support/openauth_flow.ts";
import {
  databaseUrl,
  grant,
  IN_A_MINUTE,
  lockRow,
  randomCode,
  type TestDatabase,
  testDatabase,
} from "./support/database.ts";

const RUNTIMES = [["Node", "NODE_BIN"], ["Bun", "BUN_BIN"]] as const;

let built: Promise<string> | undefined;
/** The folder with node_modules and the program, built once per run. */
function packageFolder(): Promise<string> {
  return built ??= (async () => {
    const out = await Deno.makeTempDir({ prefix: "attesto-npm-" });
    await buildNpmPackage(out);
    await Deno.copyFile(
      new URL("./support/portable_program.mjs", import.meta.url),
      `${out}/portable_program.mjs`,
    );
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(out, { recursive: true });
      } catch {
        // Already gone.
      }
    });
    return out;
  })();
}

/**
 * Runs the program (or `args` as given) with the runtime; the process
 * must exit by itself (it is killed after a generous bound, and that
 * fails the test).
 */
async function run(
  bin: string,
  args: string[],
  stdin = "",
  env: Record<string, string> = {},
): Promise<{ code: number; out: string; err: string }> {
  const cwd = await packageFolder();
  const child = new Deno.Command(bin, {
    args,
    cwd,
    env: {
      DATABASE_URL: databaseUrl(),
      GRANT: JSON.stringify(grant()),
      ...env,
    },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(stdin));
  await writer.close();
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, 60_000);
  const { code, stdout, stderr } = await child.output();
  clearTimeout(timer);
  const decoder = new TextDecoder();
  const out = decoder.decode(stdout);
  const err = decoder.decode(stderr);
  assert(!killed, `${bin} ${args.join(" ")} did not exit: ${err}`);
  return { code, out, err };
}

async function program(bin: string, args: string[], stdin = "") {
  const { code, out, err } = await run(
    bin,
    ["portable_program.mjs", ...args],
    stdin,
  );
  assertEquals(code, 0, err);
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

async function issue(t: TestDatabase, n: number): Promise<string[]> {
  const store = createCodeStore(t.sql, { table: t.table });
  const codes = Array.from({ length: n }, () => randomCode());
  await Promise.all(
    codes.map((code) =>
      store.put({ code, data: grant(), expiresAt: IN_A_MINUTE })
    ),
  );
  return codes;
}

for (const [name, variable] of RUNTIMES) {
  const bin = Deno.env.get(variable);
  const ignore = !bin;
  if (ignore) {
    console.log(`${name}: ${variable} is not set, its tests are ignored`);
  }

  Deno.test({
    name:
      `${name}: every entry point imports, and hashCode, the memory store and the error classes work`,
    ignore,
    async fn() {
      const report = await program(bin!, ["imports"]);
      for (const entry of Object.values(report.entries) as string[][]) {
        assert(entry.length > 0);
      }
      assert(report.entries["@attesto/code-store"].includes("createCodeStore"));
      assertEquals(report.hash, hashCode("abc"));
      assertEquals(report.memory, ["user-42", null]);
      assertEquals(report.errorName, "OperationTimeoutError");
    },
  });

  Deno.test({
    name:
      `${name}: of concurrent \`take()\`s in 2 OS processes, exactly one gets each entry`,
    ignore,
    async fn() {
      await using t = await testDatabase();
      const codes = await issue(t, 40);
      const reports = await Promise.all(
        [0, 1].map(() =>
          program(bin!, ["race", t.table], JSON.stringify(codes))
        ),
      );
      const won = reports.flatMap((r) => r.won as string[]);
      assertEquals(won.length, codes.length, "each code won exactly once");
      assertEquals(new Set(won).size, codes.length);
      assertEquals(reports.flatMap((r) => r.unhandled), []);
    },
  });

  Deno.test({
    name:
      `${name}: a \`take()\` whose deadline passes while its statement runs is cancelled on the server, and the code is not spent`,
    ignore,
    async fn() {
      await using t = await testDatabase();
      const [code] = await issue(t, 1);
      await using lock = await lockRow(t, code!);
      const report = await program(bin!, ["locked", t.table, code!]);
      await lock.release();
      assertEquals(report.error, "OperationTimeoutError");
      assertEquals(report.sent, true);
      assertEquals(report.stillWaiting, 0, "the cancel request reached it");
      assertEquals(report.unhandled, []);
      const store = createCodeStore(t.sql, { table: t.table });
      assert(await store.take(code!), "the cancelled take spent nothing");
    },
  });

  Deno.test({
    name:
      `${name}: a \`take()\` whose deadline passes while it waits behind another statement rejects with sent: false, and the code is not spent`,
    ignore,
    async fn() {
      await using t = await testDatabase();
      const [code] = await issue(t, 1);
      const report = await program(bin!, ["queued", t.table, code!]);
      assertEquals(report.error, "OperationTimeoutError");
      assertEquals(report.sent, false);
      assertEquals(report.unhandled, []);
      const store = createCodeStore(t.sql, { table: t.table });
      assert(await store.take(code!), "the queued take had no effect");
    },
  });

  Deno.test({
    name:
      `${name}: the CLI runs as a program: stats exits 0, an unknown command exits 2`,
    ignore,
    async fn() {
      await using t = await testDatabase();
      await issue(t, 3);
      const cli = "node_modules/@attesto/code-store/src/cli.js";
      const stats = await run(bin!, [
        cli,
        "stats",
        "--table",
        t.table,
        "--json",
      ]);
      assertEquals(stats.code, 0, stats.err);
      assertEquals(JSON.parse(stats.out).liveCodes, 3);
      const unknown = await run(bin!, [cli, "frobnicate"]);
      assertEquals(unknown.code, 2);
    },
  });
}

/** The servers' programs, as JavaScript, beside the package and the servers. */
const SERVER_FILES = [
  "examples/serve.ts",
  "examples/pkce.ts",
  "examples/oidc_provider.ts",
  "examples/oidc_postgres_adapter.ts",
  "examples/openauth_issuer.ts",
  "examples/ts_oauth2_server.ts",
  "examples/node_oauth2_server.ts",
  "examples/mcp_server.ts",
  "tests/support/oidc_server.ts",
];

let serversBuilt: Promise<string> | undefined;
/** A folder with the servers from npm, the package, and the programs. */
function serverFolder(): Promise<string> {
  return serversBuilt ??= (async () => {
    const out = await Deno.makeTempDir({ prefix: "attesto-npm-servers-" });
    await installNpmDependencies(out, [
      "oidc-provider",
      "@openauthjs/openauth",
      "@jmondi/oauth2-server",
      "@node-oauth/oauth2-server",
      "@modelcontextprotocol/sdk",
      "express",
    ]);
    await buildNpmPackage(out);
    await transpileFiles(out, SERVER_FILES);
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(out, { recursive: true });
      } catch {
        // Already gone.
      }
    });
    return out;
  })();
}

/**
 * Each server with its adapter, as a program (relative to the folder), its
 * database, its code and its token request.
 */
const SERVERS = [
  {
    name: "oidc-provider 9.13.3",
    program: "tests/support/oidc_server.js",
    env: { REVOKE: "never" },
    database: oidcDatabase,
    issue: (base: string) => oidcAuthorize(base) as Promise<IssuedCode>,
    redeem: async (base: string, { code, verifier }: IssuedCode) =>
      (await oidcToken(base, code, verifier)).status === 200,
  },
  {
    name: "OpenAuth 0.4.3",
    program: "examples/openauth_issuer.js",
    env: {},
    database: serverDatabase,
    issue: (base: string) => openAuthAuthorize(base),
    redeem: openAuthExchange,
  },
  {
    name: "ts-oauth2-server 4.3.7",
    program: "examples/ts_oauth2_server.js",
    env: {},
    database: serverDatabase,
    issue: (base: string) => authorize(base),
    redeem,
  },
  {
    name: "node-oauth2-server 5.3.0",
    program: "examples/node_oauth2_server.js",
    env: {},
    database: serverDatabase,
    issue: (base: string) => authorize(base),
    redeem,
  },
  {
    name: "MCP SDK 1.32.2",
    program: "examples/mcp_server.js",
    env: {},
    database: serverDatabase,
    issue: (base: string) => authorize(base),
    redeem,
  },
] as const;

for (const [name, variable] of RUNTIMES) {
  const bin = Deno.env.get(variable);
  for (const s of SERVERS) {
    Deno.test({
      name:
        `${name}: ${s.name} with its adapter, 2 processes: the flow gives a token, a replay none, and 50 concurrent token requests per code give 1 token each`,
      ignore: !bin,
      async fn() {
        const cwd = await serverFolder();
        await using t = await s.database();
        const start = () =>
          startServer(s.program, { DATABASE_URL: t.url, ...s.env }, {
            bin: bin!,
            cwd,
          });
        await using a = await start();
        await using b = await start();
        const first = await s.issue(a.base);
        assert(first.code, "a code through the server's own flow");
        assert(await s.redeem(b.base, first), "a token");
        assertEquals(await s.redeem(a.base, first), false, "a replay");
        const { issued } = await bursts(
          [a, b],
          5,
          50,
          () => s.issue(a.base),
          s.redeem,
        );
        console.log(
          `${name}, ${s.name}: tokens per code ${JSON.stringify(issued)}`,
        );
        assertEquals(issued, [1, 1, 1, 1, 1]);
      },
    });
  }
}
