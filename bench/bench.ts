/**
 * `deno task bench`: this store side by side with the patterns peers use,
 * and with pgbench running the store's own statement, in one run on one
 * server. Prints a markdown table and writes `bench/results.json`.
 *
 * ```sh
 * deno task bench            # embedded PostgreSQL (or DATABASE_URL)
 * deno task bench --quick    # fewer operations, for a smoke run
 * ```
 *
 * Every throughput and latency is also given as a ratio to pgbench at the
 * same number of connections, since this machine is noisy: ratios measured
 * side by side are what to compare across runs.
 *
 * @module
 */

import { parseArgs } from "node:util";
import postgres from "postgres";
import { createCodeStore, hashCode, migrate, type NewCode } from "../mod.ts";
import { databaseFromEnv } from "../tools/embedded_postgres.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    out: { type: "string", default: "bench/results.json" },
  },
});
const CALLERS = [1, 8, 64, 256];
const MAX_CONNECTIONS = 16;
const ops = (callers: number) =>
  (callers === 1 ? 3_000 : callers === 8 ? 15_000 : 30_000) /
  (flags.quick ? 10 : 1);
const connectionsFor = (callers: number) => Math.min(callers, MAX_CONNECTIONS);

type Sql = postgres.Sql;
type Take = (code: string) => Promise<unknown>;

interface Measure {
  /** Operations per second. */
  perSecond: number;
  /** Latency percentiles, milliseconds. */
  p50: number;
  p99: number;
}

// ---------------------------------------------------------------- setup --

const { url, server } = await databaseFromEnv({
  settings: { max_connections: 400 },
});
const admin = postgres(url, { max: 2, onnotice: () => {} });
const schema = `bench_${crypto.randomUUID().slice(0, 8)}`;
const table = (name: string) => `${schema}.${name}`;
let peakRss = 0;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
}, 50);

const PGBENCH = ["/usr/bin/pgbench", "/usr/local/bin/pgbench"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

const GRANT = `'bench-client', 'user-' || i, 'https://client.example/cb',
  '{openid,profile}', 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'S256',
  date_trunc('second', now()) + interval '1 hour'`;

/** Inserts codes `${prefix}-${i}`, i in [from, to), hashed as the store does. */
async function fill(name: string, prefix: string, from: number, to: number) {
  await admin.unsafe(
    `insert into ${table(name)} (code_hash, client_id, subject, redirect_uri,
       scope, code_challenge, code_challenge_method, expires_at)
     select translate(rtrim(encode(sha256(convert_to($1 || '-' || i, 'UTF8')),
              'base64'), '='), '+/', '-_'), ${GRANT}
     from generate_series($2::int, $3::int - 1) i`,
    [prefix, from, to],
  );
  await admin.unsafe(`vacuum analyze ${table(name)}`);
}

function newCode(prefix: string, i: number): NewCode {
  return {
    code: `${prefix}-${i}`,
    expiresAt: Math.floor(Date.now() / 1000) + 3600,
    data: {
      clientId: "bench-client",
      subject: `user-${i}`,
      redirectUri: "https://client.example/cb",
      scope: ["openid", "profile"],
      codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
      codeChallengeMethod: "S256",
    },
  };
}

async function pool(connections: number): Promise<Sql> {
  const sql = postgres(url, {
    max: connections,
    fetch_types: false,
    onnotice: () => {},
  });
  await Promise.all(
    Array.from({ length: connections }, () => sql`select 1`),
  );
  return sql;
}

/** `callers` concurrent loops running `op(i)` for i in [0, n). */
async function drive(
  callers: number,
  n: number,
  op: (i: number) => Promise<unknown>,
): Promise<Measure> {
  const latencies = new Float64Array(n);
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: callers }, async () => {
    while (next < n) {
      const i = next++;
      const t = performance.now();
      await op(i);
      latencies[i] = performance.now() - t;
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort();
  return {
    perSecond: n / seconds,
    p50: latencies[Math.floor(n * 0.5)]!,
    p99: latencies[Math.floor(n * 0.99)]!,
  };
}

// ------------------------------------------------------------- patterns --

/** The ways to redeem a code that the benchmark compares. */
const PATTERNS: Record<
  string,
  { table: "codes" | "marked"; make: (sql: Sql) => Take; note: string }
> = {
  "store (coalescing, default)": {
    table: "codes",
    make: (sql) => createCodeStore(sql, { table: table("codes") }).take,
    note: "one DELETE ... WHERE code_hash = ANY(...) RETURNING per batch",
  },
  "store, coalesce: false": {
    table: "codes",
    make: (sql) =>
      createCodeStore(sql, { table: table("codes"), coalesce: false }).take,
    note: "one DELETE ... RETURNING per call",
  },
  "naive SELECT then DELETE": {
    table: "codes",
    make: (sql) => async (code) => {
      const hash = hashCode(code);
      const [row] = await sql`
        select * from ${sql(table("codes"))} where code_hash = ${hash}
      `;
      if (!row) return null;
      await sql`delete from ${sql(table("codes"))} where code_hash = ${hash}`;
      return row;
    },
    note: "two statements, racy",
  },
  "SELECT ... FOR UPDATE, DELETE (transaction)": {
    table: "codes",
    make: (sql) => async (code) => {
      const hash = hashCode(code);
      return await sql.begin(async (tx) => {
        const [row] = await tx`
          select * from ${tx(table("codes"))}
          where code_hash = ${hash} for update
        `;
        if (!row) return null;
        await tx`delete from ${tx(table("codes"))} where code_hash = ${hash}`;
        return row;
      });
    },
    note: "Doorkeeper; fixes in several Python servers",
  },
  "UPDATE ... SET consumed_at (marking)": {
    table: "marked",
    make: (sql) => async (code) => {
      const [row] = await sql`
        update ${sql(table("marked"))} set consumed_at = now()
        where code_hash = ${hashCode(code)} and consumed_at is null
        returning *
      `;
      return row ?? null;
    },
    note: "attesto_phoenix's later versions",
  },
};

// -------------------------------------------------------------- pgbench --

/**
 * pgbench (C, libpq, `-M prepared`) running the store's single-code
 * statement (the DELETE ... RETURNING with its tombstone INSERT), one code
 * per transaction. pgbench cannot hash, so its rows are keyed
 * `lpad(id, 43, '0')` and each client walks its own ids.
 */
async function pgbench(
  connections: number,
  n: number,
  script: string,
  prefill: boolean,
): Promise<Measure | undefined> {
  if (!PGBENCH) return undefined;
  const perClient = Math.ceil(n / connections);
  await admin.unsafe(`truncate ${table("codes")}, ${table("codes")}_spent`);
  if (prefill) {
    await admin.unsafe(
      `insert into ${table("codes")} (code_hash, client_id, subject,
         redirect_uri, scope, code_challenge, code_challenge_method, expires_at)
       select lpad((c::bigint * 100000000 + i)::text, 43, '0'), ${GRANT}
       from generate_series(0, $1::int - 1) c,
            generate_series(0, $2::int - 1) i`,
      [connections, perClient],
    );
  }
  await admin.unsafe(`vacuum analyze ${table("codes")}`);
  const dir = await Deno.makeTempDir({ prefix: "attesto-pgbench-" });
  try {
    await Deno.writeTextFile(`${dir}/script.sql`, script);
    const output = await new Deno.Command(PGBENCH, {
      args: [
        "-n",
        "-M",
        "prepared",
        "-c",
        String(connections),
        "-j",
        String(Math.min(connections, 2)),
        "-t",
        String(perClient),
        "-D",
        "n=0",
        "-l",
        `--log-prefix=${dir}/log`,
        "-f",
        `${dir}/script.sql`,
        url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout);
    const tps = Number(text.match(/tps = ([\d.]+)/)?.[1]);
    if (!output.success || !tps) {
      throw new Error(
        `pgbench failed: ${new TextDecoder().decode(output.stderr)}`,
      );
    }
    const latencies: number[] = [];
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.name.startsWith("log")) continue;
      for (
        const line of (await Deno.readTextFile(`${dir}/${entry.name}`)).split(
          "\n",
        )
      ) {
        const latency = Number(line.split(" ")[2]);
        if (line && Number.isFinite(latency)) latencies.push(latency / 1000);
      }
    }
    latencies.sort((a, b) => a - b);
    return {
      perSecond: tps,
      p50: latencies[Math.floor(latencies.length * 0.5)]!,
      p99: latencies[Math.floor(latencies.length * 0.99)]!,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const PGBENCH_TAKE = (codes: string) =>
  `\\set id :client_id * 100000000 + :n
\\set n :n + 1
WITH spent AS (
  DELETE FROM ${codes} WHERE code_hash = lpad(:id::text, 43, '0') RETURNING *
), tombstones AS (
  INSERT INTO ${codes}_spent (code_hash, client_id, subject, redirect_uri,
    code_challenge, grant_id, spent_at, expires_at)
  SELECT code_hash, client_id, subject, redirect_uri, code_challenge,
    grant_id, now(), now() + make_interval(secs => 86400)
  FROM spent
  ON CONFLICT (code_hash) DO UPDATE SET client_id = excluded.client_id,
    subject = excluded.subject, redirect_uri = excluded.redirect_uri,
    code_challenge = excluded.code_challenge, grant_id = excluded.grant_id,
    spent_at = excluded.spent_at, expires_at = excluded.expires_at
)
SELECT code_hash, client_id, subject, redirect_uri, array_to_json(scope)::text,
  code_challenge, code_challenge_method, nonce, dpop_jkt, claims::text,
  array_to_json(resource)::text, extract(epoch from expires_at)::float8,
  grant_id
FROM spent;
`;
const PGBENCH_PUT = (codes: string) =>
  `\\set id :client_id * 100000000 + :n
\\set n :n + 1
INSERT INTO ${codes} (code_hash, client_id, subject, redirect_uri, scope,
  code_challenge, code_challenge_method, nonce, dpop_jkt, claims, resource,
  expires_at)
SELECT code_hash, client_id, subject, redirect_uri, scope, code_challenge,
  code_challenge_method, nonce, dpop_jkt, claims, resource, expires_at
FROM jsonb_populate_record(NULL::${codes}, jsonb_build_object(
  'code_hash', lpad(:id::text, 43, '0'), 'client_id', 'bench-client',
  'subject', 'user', 'redirect_uri', 'https://client.example/cb',
  'scope', jsonb_build_array('openid', 'profile'),
  'code_challenge', 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
  'code_challenge_method', 'S256', 'claims', '{}'::jsonb,
  'resource', '[]'::jsonb, 'expires_at', now() + interval '1 hour'));
`;

// ------------------------------------------------------------------ run --

const results: Record<string, unknown> = {};
const log = (line: string) => console.error(line);
try {
  await admin.unsafe(`create schema ${schema}`);
  for (const name of ["codes", "marked", "sized"]) {
    await migrate(admin, { table: table(name) });
  }
  await admin.unsafe(
    `alter table ${table("marked")} add column consumed_at timestamptz`,
  );
  const [{ version }] = await admin<[{ version: string }]>`
    select current_setting('server_version') as version
  `;
  const machine = {
    cpu: (await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))
      .match(/model name\s*:\s*(.*)/)?.[1] ?? Deno.build.arch,
    cores: navigator.hardwareConcurrency,
    memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
    postgres: version,
    server: server
      ? "embedded (fsync=off, synchronous_commit=off)"
      : "DATABASE_URL",
    pgbench: PGBENCH ? "yes" : "not installed: no ceiling, no ratios",
    date: new Date().toISOString(),
  };
  results.machine = machine;
  log(`bench on ${machine.cpu} x${machine.cores}, PostgreSQL ${version}`);

  // Take throughput and latency, per pattern and concurrency.
  const take: Record<string, Record<number, Measure>> = {};
  for (const callers of CALLERS) {
    const n = ops(callers);
    const connections = connectionsFor(callers);
    const ceiling = await pgbench(
      connections,
      n,
      PGBENCH_TAKE(table("codes")),
      true,
    );
    if (ceiling) {
      (take["pgbench: the store's statement"] ??= {})[callers] = ceiling;
    }
    for (const [name, pattern] of Object.entries(PATTERNS)) {
      await admin.unsafe(
        `truncate ${table(pattern.table)}, ${table(pattern.table)}_spent`,
      );
      const prefix = crypto.randomUUID();
      await fill(pattern.table, prefix, 0, n);
      const sql = await pool(connections);
      try {
        const op = pattern.make(sql);
        (take[name] ??= {})[callers] = await drive(
          callers,
          n,
          (i) => op(`${prefix}-${i}`),
        );
      } finally {
        await sql.end({ timeout: 5 });
      }
      log(
        `take  ${callers} callers  ${name}: ${
          Math.round(take[name]![callers]!.perSecond)
        }/s`,
      );
    }
  }
  results.take = take;

  // Put throughput: the store both ways, and pgbench's one INSERT.
  const put: Record<string, Record<number, Measure>> = {};
  for (const callers of CALLERS) {
    const n = ops(callers);
    const connections = connectionsFor(callers);
    const ceiling = await pgbench(
      connections,
      n,
      PGBENCH_PUT(table("codes")),
      false,
    );
    if (ceiling) {
      (put["pgbench: one INSERT ... jsonb_populate_record"] ??= {})[callers] =
        ceiling;
    }
    for (const coalesce of [true, false]) {
      await admin.unsafe(`truncate ${table("codes")}`);
      const sql = await pool(connections);
      const name = coalesce
        ? "store (coalescing, default)"
        : "store, coalesce: false";
      try {
        const store = createCodeStore(sql, { table: table("codes"), coalesce });
        const prefix = crypto.randomUUID();
        (put[name] ??= {})[callers] = await drive(
          callers,
          n,
          (i) => store.put(newCode(prefix, i)),
        );
      } finally {
        await sql.end({ timeout: 5 });
      }
      log(
        `put   ${callers} callers  ${name}: ${
          Math.round(put[name]![callers]!.perSecond)
        }/s`,
      );
    }
  }
  results.put = put;

  // Double redemptions under contention: 500 codes, each raced by 4
  // callers, 64 callers on 16 connections.
  const doubles: Record<
    string,
    { codes: number; winners: number; doubleRedeemed: number }
  > = {};
  for (const [name, pattern] of Object.entries(PATTERNS)) {
    await admin.unsafe(`truncate ${table(pattern.table)}`);
    const prefix = crypto.randomUUID();
    const codes = flags.quick ? 100 : 500;
    await fill(pattern.table, prefix, 0, codes);
    const sql = await pool(MAX_CONNECTIONS);
    try {
      const op = pattern.make(sql);
      const wins = new Uint8Array(codes);
      // Consecutive operations, taken up by different callers at once, race
      // for the same code.
      await drive(64, codes * 4, async (i) => {
        const code = Math.floor(i / 4);
        if (await op(`${prefix}-${code}`)) wins[code]!++;
      });
      doubles[name] = {
        codes,
        winners: wins.reduce((a, w) => a + w, 0),
        doubleRedeemed: wins.filter((w) => w > 1).length,
      };
    } finally {
      await sql.end({ timeout: 5 });
    }
    log(
      `race  ${name}: ${
        doubles[name]!.doubleRedeemed
      } codes redeemed twice or more`,
    );
  }
  results.doubleRedemptions = doubles;

  // Take latency at 10,000 and at 1,000,000 live rows (one caller).
  const sizes: Record<string, Measure> = {};
  const sized = createCodeStore(admin, { table: table("sized") });
  let filled = 0;
  for (const rows of [10_000, flags.quick ? 100_000 : 1_000_000]) {
    const prefix = crypto.randomUUID();
    const n = 2_000;
    await fill("sized", `${prefix}`, 0, n);
    await fill("sized", `filler-${rows}`, 0, rows - filled - n);
    filled = rows - n;
    sizes[rows] = await drive(1, n, (i) => sized.take(`${prefix}-${i}`));
    log(`size  ${rows} rows: p50 ${sizes[rows]!.p50.toFixed(3)} ms`);
  }
  results.tableSize = sizes;
  results.peakRssMiB = Math.round(peakRss / 2 ** 20);

  await Deno.writeTextFile(flags.out!, JSON.stringify(results, null, 2) + "\n");
  console.log(report(results));
} finally {
  clearInterval(sampler);
  await admin.unsafe(`drop schema if exists ${schema} cascade`).catch(() => {});
  await admin.end({ timeout: 5 });
  await server?.destroy();
}

// --------------------------------------------------------------- report --

function report(r: Record<string, unknown>): string {
  const take = r.take as Record<string, Record<number, Measure>>;
  const put = r.put as Record<string, Record<number, Measure>>;
  const machine = r.machine as Record<string, unknown>;
  const lines = [
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB; ` +
    `Deno ${machine.deno}; PostgreSQL ${machine.postgres}, ${machine.server}; ${machine.date}.`,
    "",
    `Callers are concurrent async loops in one Deno process, on a postgres.js pool of min(callers, ${MAX_CONNECTIONS}) connections; pgbench uses as many connections. Ratios are to pgbench at the same concurrency (throughput: higher is better; latency: lower is better).`,
    "",
  ];
  for (
    const [title, table, baseline] of [
      ["take", take, "pgbench: the store's statement"],
      ["put", put, "pgbench: one INSERT ... jsonb_populate_record"],
    ] as const
  ) {
    lines.push(`**${title}**`, "");
    lines.push(
      `| pattern | ${
        CALLERS.map((c) => `${c} caller${c > 1 ? "s" : ""}`).join(" | ")
      } |`,
      `| --- | ${CALLERS.map(() => "---").join(" | ")} |`,
    );
    for (const [name, row] of Object.entries(table)) {
      lines.push(
        `| ${name} | ${
          CALLERS.map((c) => {
            const m = row[c];
            const base = table[baseline]?.[c];
            if (!m) return "";
            const ratio = base && name !== baseline
              ? ` (${(m.perSecond / base.perSecond).toFixed(2)}×; p50 ${
                (m.p50 / base.p50).toFixed(2)
              }×)`
              : "";
            return `${Math.round(m.perSecond).toLocaleString("en")}/s, p50 ${
              m.p50.toFixed(2)
            } ms, p99 ${m.p99.toFixed(2)} ms${ratio}`;
          }).join(" | ")
        } |`,
      );
    }
    lines.push("");
  }
  const doubles = r.doubleRedemptions as Record<
    string,
    { codes: number; winners: number; doubleRedeemed: number }
  >;
  lines.push("**Double redemptions** (each code raced by 4 of 64 callers)", "");
  lines.push(
    "| pattern | codes | winners | codes redeemed twice or more |",
    "| --- | --- | --- | --- |",
  );
  for (const [name, d] of Object.entries(doubles)) {
    lines.push(`| ${name} | ${d.codes} | ${d.winners} | ${d.doubleRedeemed} |`);
  }
  const sizes = r.tableSize as Record<string, Measure>;
  const [small, large] = Object.entries(sizes);
  lines.push(
    "",
    `**Table size** (store, 1 caller): p50 ${small![1].p50.toFixed(3)} ms at ${
      Number(small![0]).toLocaleString("en")
    } rows, ` +
      `${large![1].p50.toFixed(3)} ms at ${
        Number(large![0]).toLocaleString("en")
      } rows ` +
      `(${(large![1].p50 / small![1].p50).toFixed(2)}×); p99 ${
        small![1].p99.toFixed(3)
      } / ${large![1].p99.toFixed(3)} ms.`,
    "",
    `**Peak memory** of the Deno process: ${r.peakRssMiB} MiB RSS.`,
  );
  return lines.join("\n");
}
