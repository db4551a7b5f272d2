/**
 * `deno task bench`: the store measured side by side, in one run, with the
 * references it is judged against, on every server given: the embedded
 * PostgreSQL (fsync off), and `DATABASE_URL` when it is set (a durable
 * server, as production runs). Writes `bench/results.json` and
 * `bench/README.md`.
 *
 * ```sh
 * DATABASE_URL=postgres://postgres@127.0.0.1:5432/test deno task bench
 * deno task bench --quick    # fewer operations, for a smoke run
 * ```
 *
 * The references, each on the same server in the same run:
 *
 * - pgbench (C, libpq, prepared) running the store's own one-code statement
 *   (`DELETE ... RETURNING` with its tombstone insert), at 8 and 64
 *   connections: the ceiling for one statement per redemption;
 * - pgbench running the store's one-row `INSERT`;
 * - raw postgres.js on the store's pool: a one-row `DELETE ... RETURNING`
 *   of a prehashed code (the driver's own latency floor), and 64 prehashed
 *   codes deleted per statement (the driver's batched limit).
 *
 * Ratios measured side by side are what to compare across runs: this
 * machine is noisy. Nothing here is tuned to the targets it reports.
 *
 * @module
 */

import { parseArgs } from "node:util";
import process from "node:process";
import postgres, { type Sql } from "../tools/postgres.ts";
import { createCodeStore, hashCode, migrate, type NewCode } from "../mod.ts";
import { EmbeddedPostgres } from "../tools/embedded_postgres.ts";
import { type Breakdown, profileTakes } from "./profile.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    out: { type: "string", default: "bench" },
  },
});
const scale = flags.quick ? 0.1 : 1;
const POOL = 8;
const PGBENCH = ["/usr/bin/pgbench", "/usr/local/bin/pgbench"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

/** Throughput and latency of a run. */
interface Measure {
  /** Operations per second. */
  perSecond: number;
  /** Latency percentiles, milliseconds. */
  p50: number;
  p99: number;
  /** Client CPU (user + system) per operation, microseconds. */
  cpuMicros?: number;
}

/** Everything measured on one server. */
interface ServerResults {
  server: string;
  postgres: string;
  fsync: string;
  synchronousCommit: string;
  take: Record<string, Measure>;
  put: Record<string, Measure>;
  doubleRedemptions: Record<
    string,
    { codes: number; winners: number; doubled: number }
  >;
  targets: Target[];
  /** Main-thread self time per take at 64 callers (`bench/profile.ts`). */
  profile?: Breakdown;
}

interface Target {
  figure: string;
  target: string;
  result: string;
  met: boolean | undefined;
}

// --------------------------------------------------------------- helpers --

const GRANT = `'bench-client', 'user-' || i, 'https://client.example/cb',
  '{openid,profile}', 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'S256',
  date_trunc('second', now()) + interval '1 hour'`;

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

/** `callers` concurrent loops running `op(i)` for i in [0, n). */
async function drive(
  callers: number,
  n: number,
  op: (i: number) => Promise<unknown>,
): Promise<Measure> {
  const latencies = new Float64Array(n);
  let next = 0;
  const cpu = process.cpuUsage();
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
  const used = process.cpuUsage(cpu);
  latencies.sort();
  return {
    perSecond: n / seconds,
    p50: latencies[Math.floor(n * 0.5)]!,
    p99: latencies[Math.floor(n * 0.99)]!,
    cpuMicros: (used.user + used.system) / n,
  };
}

/** One server's run. */
async function benchServer(url: string, label: string): Promise<ServerResults> {
  const admin = postgres(url, { max: 2, onnotice: () => {} });
  const schema = `bench_${crypto.randomUUID().slice(0, 8)}`;
  const table = (name: string) => `${schema}.${name}`;
  const log = (line: string) => console.error(`[${label}] ${line}`);
  try {
    await admin.unsafe(`create schema ${schema}`);
    for (const name of ["codes", "marked"]) {
      await migrate(admin, { table: table(name) });
    }
    await admin.unsafe(
      `alter table ${table("marked")} add column consumed_at timestamptz`,
    );
    const [settings] = await admin<
      [{ version: string; fsync: string; sync: string }]
    >`
      select current_setting('server_version') as version,
        current_setting('fsync') as fsync,
        current_setting('synchronous_commit') as sync
    `;

    /** Inserts codes `${prefix}-${i}`, hashed as the store does. */
    const fill = async (name: string, prefix: string, n: number) => {
      await admin.unsafe(`truncate ${table(name)}, ${table(name)}_spent`);
      await admin.unsafe(
        `insert into ${table(name)} (code_hash, client_id, subject,
           redirect_uri, scope, code_challenge, code_challenge_method,
           expires_at)
         select translate(rtrim(encode(sha256(convert_to($1 || '-' || i,
           'UTF8')), 'base64'), '='), '+/', '-_'), ${GRANT}
         from generate_series(0, $2::int - 1) i`,
        [prefix, n],
      );
      await admin.unsafe(`vacuum analyze ${table(name)}`);
    };
    const pool = async () => {
      const sql = postgres(url, {
        max: POOL,
        fetch_types: false,
        onnotice: () => {},
      });
      await Promise.all(Array.from({ length: POOL }, () => sql`select 1`));
      return sql;
    };
    /** Runs `fn` with a fresh pool and `n` fresh codes. */
    const withCodes = async <T>(
      n: number,
      fn: (sql: Sql, prefix: string) => Promise<T>,
      name = "codes",
    ) => {
      const prefix = crypto.randomUUID();
      await fill(name, prefix, n);
      const sql = await pool();
      try {
        return await fn(sql, prefix);
      } finally {
        await sql.end({ timeout: 5 });
      }
    };

    const take: Record<string, Measure> = {};
    const put: Record<string, Measure> = {};
    const store = (sql: Sql) => createCodeStore(sql, { table: table("codes") });

    // Warm the JIT and the server's caches.
    await withCodes(Math.round(20_000 * scale), (sql, prefix) => {
      const s = store(sql);
      return drive(
        64,
        Math.round(20_000 * scale),
        (i) => s.take(`${prefix}-${i}`),
      );
    });

    // pgbench: the store's one-code statement, and its one-row insert.
    for (const connections of [8, 64]) {
      const m = await pgbench(
        url,
        admin,
        table("codes"),
        connections,
        Math.round(16_000 * scale),
        TAKE_SCRIPT(table("codes")),
        true,
      );
      if (m) {
        take[`pgbench, one-code take statement, ${connections} connections`] =
          m;
      }
      const p = await pgbench(
        url,
        admin,
        table("codes"),
        connections,
        Math.round(16_000 * scale),
        PUT_SCRIPT(table("codes")),
        false,
      );
      if (p) put[`pgbench, one-row insert, ${connections} connections`] = p;
      log(
        `pgbench ${connections}: take ${Math.round(m?.perSecond ?? 0)}/s, put ${
          Math.round(p?.perSecond ?? 0)
        }/s`,
      );
    }

    // The store, lone and concurrent.
    for (const callers of [1, 64, 256]) {
      const n = Math.round((callers === 1 ? 5_000 : 60_000) * scale);
      take[`store, ${callers} caller${callers > 1 ? "s" : ""}`] =
        await withCodes(n, (sql, prefix) => {
          const s = store(sql);
          return drive(callers, n, (i) => s.take(`${prefix}-${i}`));
        });
      log(
        `store take ${callers}: ${
          Math.round(
            take[`store, ${callers} caller${callers > 1 ? "s" : ""}`]!
              .perSecond,
          )
        }/s`,
      );
    }
    for (const callers of [1, 64]) {
      const n = Math.round((callers === 1 ? 5_000 : 60_000) * scale);
      await admin.unsafe(`truncate ${table("codes")}, ${table("codes")}_spent`);
      const sql = await pool();
      try {
        const s = store(sql);
        const prefix = crypto.randomUUID();
        put[`store, ${callers} caller${callers > 1 ? "s" : ""}`] = await drive(
          callers,
          n,
          (i) => s.put(newCode(prefix, i)),
        );
      } finally {
        await sql.end({ timeout: 5 });
      }
    }

    // Raw postgres.js on the same pool: one prehashed row per statement
    // (one caller), and 64 per statement (as many statements as connections).
    {
      const n = Math.round(5_000 * scale);
      take["raw postgres.js, one prehashed row, 1 caller"] = await withCodes(
        n,
        (sql, prefix) => {
          const hashes = Array.from(
            { length: n },
            (_, i) => hashCode(`${prefix}-${i}`),
          );
          return drive(
            1,
            n,
            (i) =>
              sql`delete from ${
                sql(table("codes"))
              } where code_hash = ${hashes[i]!} returning *`,
          );
        },
      );
    }
    {
      // The store's own statement through the raw driver: the server's
      // share of a lone take, apart from the store's client work.
      const n = Math.round(5_000 * scale);
      take["raw postgres.js, the store's one-code statement, 1 caller"] =
        await withCodes(n, (sql, prefix) => {
          const hashes = Array.from(
            { length: n },
            (_, i) => hashCode(`${prefix}-${i}`),
          );
          return drive(
            1,
            n,
            (i) =>
              // The parameter's type comes from the server (jsonb), and
              // postgres.js serialises the array to JSON for it.
              sql.unsafe(RAW_TAKE(table("codes")), [[hashes[i]!]], {
                prepare: true,
              }),
          );
        });
    }
    // 64 prehashed codes per statement, as many statements at once as the
    // pool has connections: a plain DELETE ... RETURNING (the driver's
    // batched limit), and the store's own statement (its server side).
    for (
      const [name, statement] of [
        [
          "raw postgres.js, 64 prehashed rows per statement",
          (sql: Sql, keys: string[]) =>
            sql`
              delete from ${sql(table("codes"))}
              where code_hash = any(array(select jsonb_array_elements_text(${
              sql.json(keys)
            })))
              returning *
            `,
        ],
        [
          "raw postgres.js, the store's statement, 64 prehashed codes each",
          (sql: Sql, keys: string[]) =>
            sql.unsafe(RAW_TAKE(table("codes")), [keys], { prepare: true }),
        ],
      ] as const
    ) {
      const n = Math.round(60_000 * scale);
      const perStatement = 64;
      const m = await withCodes(n, (sql, prefix) => {
        const hashes = Array.from(
          { length: n },
          (_, i) => hashCode(`${prefix}-${i}`),
        );
        return drive(POOL, Math.ceil(n / perStatement), (j) =>
          statement(
            sql,
            hashes.slice(j * perStatement, (j + 1) * perStatement),
          ));
      });
      take[name] = {
        perSecond: m.perSecond * perStatement,
        p50: m.p50,
        p99: m.p99,
        cpuMicros: (m.cpuMicros ?? 0) / perStatement,
      };
    }

    // The patterns peers use, at 64 callers, and whether they double-redeem.
    const patterns: Record<
      string,
      {
        table: "codes" | "marked";
        make: (sql: Sql) => (code: string) => Promise<unknown>;
      }
    > = {
      "store (default)": { table: "codes", make: (sql) => store(sql).take },
      "store, coalesce: false": {
        table: "codes",
        make: (sql) =>
          createCodeStore(sql, { table: table("codes"), coalesce: false }).take,
      },
      "naive SELECT then DELETE": {
        table: "codes",
        make: (sql) => async (code) => {
          const hash = hashCode(code);
          const [row] = await sql`select * from ${
            sql(table("codes"))
          } where code_hash = ${hash}`;
          if (!row) return null;
          await sql`delete from ${
            sql(table("codes"))
          } where code_hash = ${hash}`;
          return row;
        },
      },
      "SELECT ... FOR UPDATE, then DELETE (transaction)": {
        table: "codes",
        make: (sql) => (code) =>
          sql.begin(async (tx) => {
            const hash = hashCode(code);
            const [row] = await tx`select * from ${
              tx(table("codes"))
            } where code_hash = ${hash} for update`;
            if (!row) return null;
            await tx`delete from ${
              tx(table("codes"))
            } where code_hash = ${hash}`;
            return row;
          }),
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
      },
    };
    const doubleRedemptions: ServerResults["doubleRedemptions"] = {};
    for (const [name, pattern] of Object.entries(patterns)) {
      const n = Math.round(20_000 * scale);
      if (!name.startsWith("store (default)")) {
        take[`${name}, 64 callers`] = await withCodes(n, (sql, prefix) => {
          const op = pattern.make(sql);
          return drive(64, n, (i) => op(`${prefix}-${i}`));
        }, pattern.table);
      }
      const codes = Math.round(2_000 * scale);
      doubleRedemptions[name] = await withCodes(codes, async (sql, prefix) => {
        const op = pattern.make(sql);
        const wins = new Uint8Array(codes);
        // Consecutive operations, taken up by different callers at once,
        // race for the same code: 4 per code.
        await drive(64, codes * 4, async (i) => {
          const code = Math.floor(i / 4);
          if (await op(`${prefix}-${code}`)) wins[code]!++;
        });
        return {
          codes,
          winners: wins.reduce((a, w) => a + w, 0),
          doubled: wins.filter((w) => w > 1).length,
        };
      }, pattern.table);
      log(
        `${name}: ${
          doubleRedemptions[name]!.doubled
        } codes redeemed twice or more`,
      );
    }

    const results: ServerResults = {
      server: label,
      postgres: settings.version,
      fsync: settings.fsync,
      synchronousCommit: settings.sync,
      take,
      put,
      doubleRedemptions,
      targets: [],
    };
    results.targets = targets(results);
    // Where a take's client CPU goes, in a process of its own.
    results.profile = await profileTakes(url);
    log(
      `profile: ${
        Object.entries(results.profile).map(([k, v]) =>
          `${k} ${v.toFixed(1)} µs`
        )
          .join(", ")
      }`,
    );
    return results;
  } finally {
    await admin.unsafe(`drop schema if exists ${schema} cascade`).catch(
      () => {},
    );
    await admin.end({ timeout: 5 });
  }
}

/** The targets of the performance issue, judged on these figures. */
function targets(r: ServerResults): Target[] {
  const t = r.take;
  const best = (prefix: string, of: Record<string, Measure>) =>
    Math.max(
      ...Object.entries(of).filter(([k]) => k.startsWith(prefix)).map(([, m]) =>
        m.perSecond
      ),
    );
  const ceiling = best("pgbench, one-code take", t);
  const insert = best("pgbench, one-row insert", r.put);
  const ratio = (a: number | undefined, b: number) =>
    a === undefined || !(b > 0) ? undefined : a / b;
  const x = (v: number | undefined) =>
    v === undefined ? "n/a" : `${v.toFixed(2)}×`;
  const at64 = ratio(t["store, 64 callers"]?.perSecond, ceiling);
  const at256 = ratio(t["store, 256 callers"]?.perSecond, ceiling);
  const cpu = t["store, 64 callers"]?.cpuMicros;
  const lone = ratio(
    t["store, 1 caller"]?.p50,
    t["raw postgres.js, one prehashed row, 1 caller"]!.p50,
  );
  const loneOwn = ratio(
    t["store, 1 caller"]?.p50,
    t["raw postgres.js, the store's one-code statement, 1 caller"]!.p50,
  );
  const vsRaw = ratio(
    t["store, 64 callers"]?.perSecond,
    t["raw postgres.js, 64 prehashed rows per statement"]!.perSecond,
  );
  const puts = ratio(r.put["store, 64 callers"]?.perSecond, insert);
  return [
    // The targets of this round (#18), measured side by side.
    {
      figure:
        "take at 64 callers ÷ raw postgres.js deleting 64 prehashed codes per statement",
      target: "≥ 0.5×",
      result: x(vsRaw),
      met: vsRaw === undefined ? undefined : vsRaw >= 0.5,
    },
    {
      figure: "client CPU per take at 64 callers",
      target: "≤ 20 µs",
      result: cpu === undefined ? "n/a" : `${cpu.toFixed(1)} µs`,
      met: cpu === undefined ? undefined : cpu <= 20,
    },
    {
      figure:
        "lone take p50 ÷ the store's one-code statement sent through the raw driver",
      target: "≤ 1.15×",
      result: x(loneOwn),
      met: loneOwn === undefined ? undefined : loneOwn <= 1.15,
    },
    // Earlier targets, kept for comparison.
    {
      figure:
        "take at 64 callers ÷ best pgbench one-code statement (8 or 64 connections)",
      target: "≥ 5×",
      result: x(at64),
      met: at64 === undefined ? undefined : at64 >= 5,
    },
    {
      figure: "take at 256 callers ÷ the same",
      target: "≥ 8×",
      result: x(at256),
      met: at256 === undefined ? undefined : at256 >= 8,
    },

    {
      figure:
        "lone take p50 ÷ raw postgres.js one-row DELETE ... RETURNING p50",
      target: "≤ 1.2×",
      result: x(lone),
      met: lone === undefined ? undefined : lone <= 1.2,
    },

    {
      figure: "put at 64 callers ÷ best pgbench one-row insert",
      target: "≥ 3×",
      result: x(puts),
      met: puts === undefined ? undefined : puts >= 3,
    },
  ];
}

// -------------------------------------------------------------- pgbench --

/**
 * pgbench running `script`, one operation per transaction. pgbench cannot
 * hash, so its rows are keyed `lpad(id, 43, '0')` and each client walks its
 * own ids.
 */
async function pgbench(
  url: string,
  admin: Sql,
  codes: string,
  connections: number,
  n: number,
  script: string,
  prefill: boolean,
): Promise<Measure | undefined> {
  if (!PGBENCH) return undefined;
  const perClient = Math.ceil(n / connections);
  await admin.unsafe(`truncate ${codes}, ${codes}_spent`);
  if (prefill) {
    await admin.unsafe(
      `insert into ${codes} (code_hash, client_id, subject, redirect_uri,
         scope, code_challenge, code_challenge_method, expires_at)
       select lpad((c::bigint * 100000000 + i)::text, 43, '0'), ${GRANT}
       from generate_series(0, $1::int - 1) c,
            generate_series(0, $2::int - 1) i`,
      [connections, perClient],
    );
  }
  await admin.unsafe(`vacuum analyze ${codes}`);
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

/** The store's one-code take statement, as it sends it. */
const TAKE_SCRIPT = (codes: string) =>
  `\\set id :client_id * 100000000 + :n
\\set n :n + 1
WITH spent AS (
  DELETE FROM ${codes}
  WHERE code_hash = any(array(select jsonb_array_elements_text(
    jsonb_build_array(lpad(:id::text, 43, '0')))))
  RETURNING *
), tombstones AS (
  INSERT INTO ${codes}_spent AS s (code_hash, client_id, subject,
    redirect_uri, code_challenge, grant_id, spent_at, expires_at)
  SELECT code_hash, client_id, subject, redirect_uri, code_challenge,
    grant_id, now(), now() + make_interval(secs => 86400)
  FROM spent
  ON CONFLICT (code_hash) DO UPDATE SET client_id = excluded.client_id,
    subject = excluded.subject, redirect_uri = excluded.redirect_uri,
    code_challenge = excluded.code_challenge, grant_id = excluded.grant_id,
    spent_at = excluded.spent_at, expires_at = excluded.expires_at
  WHERE s.expires_at <= now()
  RETURNING code_hash
)
SELECT json_build_array(code_hash, client_id, subject, redirect_uri, scope,
  code_challenge, code_challenge_method, nonce, dpop_jkt, claims, resource,
  extract(epoch from expires_at), grant_id, context)::text
FROM spent WHERE code_hash IN (SELECT code_hash FROM tombstones);
`;

/** The store's take statement with `$1`, a JSON array of hashes. */
const RAW_TAKE = (codes: string) =>
  TAKE_SCRIPT(codes).split("\n").slice(2).join("\n").replace(
    "jsonb_build_array(lpad(:id::text, 43, '0'))",
    "$1::jsonb",
  );

/** The store's one-row insert, as it sends it. */
const PUT_SCRIPT = (codes: string) =>
  `\\set id :client_id * 100000000 + :n
\\set n :n + 1
INSERT INTO ${codes} (code_hash, client_id, subject, redirect_uri, scope,
  code_challenge, code_challenge_method, nonce, dpop_jkt, claims, resource,
  expires_at, grant_id)
SELECT code_hash, client_id, subject, redirect_uri, scope, code_challenge,
  code_challenge_method, nonce, dpop_jkt, claims, resource, expires_at,
  grant_id
FROM jsonb_populate_recordset(NULL::${codes}, jsonb_build_array(
  jsonb_build_object('code_hash', lpad(:id::text, 43, '0'),
  'client_id', 'bench-client', 'subject', 'user',
  'redirect_uri', 'https://client.example/cb',
  'scope', jsonb_build_array('openid', 'profile'),
  'code_challenge', 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
  'code_challenge_method', 'S256', 'claims', '{}'::jsonb,
  'resource', '[]'::jsonb, 'expires_at', now() + interval '1 hour'))) r
WHERE NOT EXISTS (
  SELECT FROM ${codes}_spent s
  WHERE s.code_hash = r.code_hash AND s.expires_at > now())
ON CONFLICT (code_hash) DO NOTHING
RETURNING code_hash;
`;

// ------------------------------------------------------------------ run --

const machine = {
  cpu: (await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))
    .match(/model name\s*:\s*(.*)/)?.[1] ?? Deno.build.arch,
  cores: navigator.hardwareConcurrency,
  memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
  os: `${Deno.build.os} ${Deno.osRelease()}`,
  deno: Deno.version.deno,
  pgbench: PGBENCH ? "yes" : "not installed: no ceiling, no ratios",
  date: new Date().toISOString(),
  quick: flags.quick,
};
const servers: ServerResults[] = [];
let peakRss = 0;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
}, 50);
try {
  {
    await using embedded = await EmbeddedPostgres.create();
    servers.push(await benchServer(embedded.url, "embedded, fsync off"));
  }
  const durable = Deno.env.get("DATABASE_URL");
  if (durable) servers.push(await benchServer(durable, "DATABASE_URL"));
} finally {
  clearInterval(sampler);
}
const results = { machine, peakRssMiB: Math.round(peakRss / 2 ** 20), servers };
await Deno.writeTextFile(
  `${flags.out}/results.json`,
  JSON.stringify(results, null, 2) + "\n",
);
// The generated figures go between the markers of bench/README.md; the
// text around them (what the figures mean) is kept.
const page = `${flags.out}/README.md`;
const START = "<!-- bench:start -->";
const END = "<!-- bench:end -->";
const generated = `${START}\n${report(results)}\n${END}`;
const existing = await Deno.readTextFile(page).catch(() => "");
await Deno.writeTextFile(
  page,
  existing.includes(START) && existing.includes(END)
    ? existing.slice(0, existing.indexOf(START)) + generated +
      existing.slice(existing.indexOf(END) + END.length)
    : `# Benchmarks\n\n${generated}\n`,
);
console.log(report(results));

// --------------------------------------------------------------- report --

function report(r: typeof results): string {
  const m = r.machine;
  const fmt = (x: Measure) =>
    `${Math.round(x.perSecond).toLocaleString("en")}/s | ${
      x.p50.toFixed(2)
    } ms | ${x.p99.toFixed(2)} ms | ${
      x.cpuMicros === undefined ? "" : `${x.cpuMicros.toFixed(1)} µs`
    }`;
  const lines = [
    "Generated by `deno task bench` (`bench/bench.ts`); the raw figures are in",
    "`bench/results.json`. Every figure of a server was measured in the same run,",
    "side by side with its references: compare ratios across runs, not absolute",
    "numbers (this machine is noisy). Nothing is tuned to the targets.",
    "",
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB; ${m.os}; Deno ${m.deno}; ${m.date}${
      m.quick ? " (quick run)" : ""
    }. The client, the server and pgbench share the ${m.cores} cores.`,
    "",
    "The store runs on a postgres.js pool of 8 connections (`fetch_types: false`),",
    "coalescing on (the default). Callers are concurrent async loops in one Deno",
    "process, each taking one code after another. CPU is the Deno process's user +",
    "system time over the run, per operation. pgbench runs the store's own",
    "statements, one code per transaction, prepared.",
    "",
  ];
  for (const s of r.servers) {
    lines.push(
      `## ${s.server}: PostgreSQL ${s.postgres}, fsync ${s.fsync}, synchronous_commit ${s.synchronousCommit}`,
      "",
      "| target | figure | result | |",
      "| --- | --- | --- | --- |",
      ...s.targets.map((t) =>
        `| ${t.target} | ${t.figure} | ${t.result} | ${
          t.met === undefined ? "" : t.met ? "met" : "**missed**"
        } |`
      ),
      "",
      ...(s.profile
        ? [
          "**Where a take's client CPU goes** (main-thread self time per take at 64",
          "callers, V8's CPU profiler, `bench/profile.ts`; *hash* is the local",
          "stand-in for `@std/crypto`'s `digestSync`, not the real WASM build)",
          "",
          "| store code | hash | driver (postgres.js) | runtime (Deno, node compat, I/O) | GC | total |",
          "| --- | --- | --- | --- | --- | --- |",
          `| ${
            (["store", "hash", "driver", "runtime", "GC", "total"] as const)
              .map((k) => `${s.profile![k].toFixed(1)} µs`).join(" | ")
          } |`,
          "",
        ]
        : []),
      "**take**",
      "",
      "| what | throughput | p50 | p99 | client CPU per take |",
      "| --- | --- | --- | --- | --- |",
      ...Object.entries(s.take).map(([k, v]) => `| ${k} | ${fmt(v)} |`),
      "",
      "**put**",
      "",
      "| what | throughput | p50 | p99 | client CPU per put |",
      "| --- | --- | --- | --- | --- |",
      ...Object.entries(s.put).map(([k, v]) => `| ${k} | ${fmt(v)} |`),
      "",
      "**Double redemptions** (each code raced by 4 of 64 callers)",
      "",
      "| pattern | codes | winners | codes redeemed twice or more |",
      "| --- | --- | --- | --- |",
      ...Object.entries(s.doubleRedemptions).map(([k, d]) =>
        `| ${k} | ${d.codes} | ${d.winners} | ${d.doubled} |`
      ),
      "",
    );
  }
  lines.push(`Peak memory of the Deno process: ${r.peakRssMiB} MiB RSS.`, "");
  return lines.join("\n");
}
