// Runs under Node and Bun against the package as JSR builds it for npm
// (tools/npm_package.ts), from a folder whose node_modules holds it. Each
// mode prints one JSON line; `tests/runtimes_test.ts` drives it.
//
//   node portable_program.mjs imports
//   node portable_program.mjs race <table>            (codes on stdin)
//   node portable_program.mjs locked <table> <code>   (its row is locked)
//   node portable_program.mjs queued <table> <code>   (the pool is busy)
import process from "node:process";
import postgres from "postgres";
import { createCodeStore, OperationTimeoutError } from "@attesto/code-store";

const [mode, table, code] = process.argv.slice(2);
const url = process.env.DATABASE_URL;
const options = { fetch_types: false, backoff: false, connect_timeout: 5 };

async function readStdin() {
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  return text;
}

function print(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

const unhandled = [];
process.on("unhandledRejection", (reason) => unhandled.push(String(reason)));

if (mode === "imports") {
  const entries = {};
  for (
    const name of [
      "@attesto/code-store",
      "@attesto/code-store/memory",
      "@attesto/code-store/cli",
      "@attesto/code-store/oidc-provider",
    ]
  ) {
    entries[name] = Object.keys(await import(name)).sort();
  }
  const { hashCode } = await import("@attesto/code-store");
  const { createMemoryCodeStore } = await import("@attesto/code-store/memory");
  const memory = createMemoryCodeStore();
  const grant = JSON.parse(process.env.GRANT);
  const code = "SplxlOBeZQQYbYS6WxSbIA";
  await memory.put({ code, data: grant, expiresAt: 2 ** 31 - 1 });
  const first = await memory.take(code);
  const second = await memory.take(code);
  print({
    entries,
    hash: hashCode("abc"),
    memory: [first?.data.subject ?? null, second],
    errorName: new OperationTimeoutError("take", 1, false).name,
  });
} else if (mode === "race") {
  // Every code raced by 4 callers over 2 pools of this process.
  const codes = JSON.parse(await readStdin());
  const pools = [postgres(url, options), postgres(url, options)];
  const stores = pools.map((sql) => createCodeStore(sql, { table }));
  const won = [];
  await Promise.all(codes.map(async (c) => {
    const results = await Promise.all(
      [0, 1, 2, 3].map((i) => stores[i % 2].take(c)),
    );
    for (const entry of results) if (entry) won.push(c);
  }));
  await Promise.all(pools.map((sql) => sql.end({ timeout: 5 })));
  print({ won, unhandled });
} else if (mode === "locked" || mode === "queued") {
  // locked: the take's statement runs and waits for a row lock past its
  // deadline; queued: it waits behind another statement on the pool's only
  // connection. Either way the take rejects in time, and the code is not
  // returned to anyone.
  const sql = postgres(url, {
    ...options,
    max: 1,
    connection: { application_name: "attesto-portable" },
  });
  const store = createCodeStore(sql, { table, timeoutMs: 300 });
  await sql`select 1`;
  const busy = mode === "queued"
    ? sql`select pg_sleep(1)`.execute()
    : undefined;
  const outcome = await store.take(code).then(
    (entry) => ({ entry: entry?.data.subject ?? null }),
    (error) => ({
      error: error.name,
      code: error.code,
      sent: error.sent,
    }),
  );
  await busy;
  // The cancel request reached the server: nothing of this pool still
  // waits for the lock (looked at for up to 5 s).
  const probe = postgres(url, { ...options, max: 1 });
  let stillWaiting = 0;
  for (let i = 0; i < 100; i++) {
    const [{ n }] = await probe`
      select count(*)::int as n from pg_stat_activity
      where application_name = 'attesto-portable' and wait_event_type = 'Lock'
    `;
    stillWaiting = n;
    if (n === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await probe.end({ timeout: 5 });
  await sql.end({ timeout: 5 });
  print({ ...outcome, stillWaiting, unhandled });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
