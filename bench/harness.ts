/**
 * What `bench.ts` and `profile.ts` share: both postgres.js majors, the
 * bench's table and its codes, the store's own take statement as the store
 * sends it, the workloads, and time-bounded runs.
 *
 * @module
 */

import { createHash } from "node:crypto";
import process from "node:process";
import { createCodeStore, hashCode, migrate } from "../mod.ts";
import { databaseFromEnv } from "../tools/embedded_postgres.ts";
import { type Major, major, type Sql } from "../tools/postgres.ts";
export { type Major, major, MAJORS, type Sql } from "../tools/postgres.ts";

/** Connections of every pool the bench measures on. */
export const POOL = 8;

/**
 * A pool of {@linkcode POOL} connections on `url` (no type fetching, no
 * notices), every connection opened.
 */
export async function openPool(
  { postgres }: Major,
  url: string,
  extra: Record<string, unknown> = {},
): Promise<Sql> {
  const sql = postgres(url, {
    max: POOL,
    fetch_types: false,
    onnotice: () => {},
    ...extra,
  });
  const max = (extra.max as number | undefined) ?? POOL;
  await Promise.all(
    Array.from({ length: max }, () => sql`select pg_sleep(0.005)`),
  );
  return sql;
}

// ------------------------------------------------------ table and codes --

/**
 * Makes `schema` and the store's tables in it, autovacuum off; returns the
 * codes table.
 */
export async function createTable(admin: Sql, schema: string): Promise<string> {
  await admin.unsafe(`create schema ${schema}`);
  const table = `${schema}.codes`;
  await migrate(admin, { table });
  // The bench vacuums after each fill; autovacuum would run in the windows.
  for (const name of [table, `${table}_spent`]) {
    await admin.unsafe(
      `alter table ${name} set (autovacuum_enabled = false)`,
    );
  }
  return table;
}

/** Where a run measures. */
export interface BenchDatabase {
  /** The database's URL. */
  readonly url: string;
  /** Whether it is an embedded PostgreSQL (`DATABASE_URL` was unset). */
  readonly embedded: boolean;
  /** A pool of two connections for setting up (postgres.js 4.x). */
  readonly admin: Sql;
  /** The codes table ({@linkcode createTable}). */
  readonly table: string;
}

/**
 * Runs `work` on `DATABASE_URL` (an embedded PostgreSQL when it is unset),
 * the store's tables made in a schema of its own (`prefix_` and a random
 * suffix); then, whatever `work` did, drops the schema, ends the admin pool
 * and stops the embedded server.
 */
export async function withBenchDatabase<T>(
  prefix: string,
  work: (db: BenchDatabase) => Promise<T>,
): Promise<T> {
  const { url, server } = await databaseFromEnv();
  const admin = major(4).postgres(url, { max: 2, onnotice: () => {} });
  const schema = `${prefix}_${crypto.randomUUID().slice(0, 8)}`;
  try {
    const table = await createTable(admin, schema);
    return await work({ url, embedded: server !== undefined, admin, table });
  } finally {
    await admin.unsafe(`drop schema if exists ${schema} cascade`).catch(
      () => {},
    );
    await admin.end({ timeout: 5 });
    await server?.destroy();
  }
}

/** The plaintext of code `i` of a fill. */
export function codeOf(prefix: string, i: number): string {
  return `${prefix}-${i}`;
}

/** A code's hash as the store keys it, by `node:crypto`. */
export function hashOf(code: string): string {
  return createHash("sha256").update(code).digest("base64url");
}

/**
 * Empties the tables and stores `n` codes ({@linkcode codeOf}), hashed as
 * the store hashes them, then vacuums and checkpoints (superuser only:
 * skipped otherwise), so that no fill's writes land in a measurement.
 */
export async function fill(
  admin: Sql,
  table: string,
  prefix: string,
  n: number,
): Promise<void> {
  await admin.unsafe(`truncate ${table}, ${table}_spent`);
  await addCodes(admin, table, prefix, n);
  await admin.unsafe(`vacuum analyze ${table}, ${table}_spent`);
  await admin.unsafe(`checkpoint`).catch(() => {});
}

/** Stores `n` more codes ({@linkcode codeOf}), hashed as the store does. */
export async function addCodes(
  admin: Sql,
  table: string,
  prefix: string,
  n: number,
): Promise<void> {
  await admin.unsafe(
    `insert into ${table} (code_hash, client_id, subject, redirect_uri,
       scope, code_challenge, code_challenge_method, expires_at)
     select translate(rtrim(encode(sha256(convert_to($1 || '-' || i,
       'UTF8')), 'base64'), '='), '+/', '-_'), 'bench-client', 'user-' || i,
       'https://client.example/cb', '{openid,profile}',
       'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'S256',
       date_trunc('second', now()) + interval '1 hour'
     from generate_series(0, $2::int - 1) i`,
    [prefix, n],
  );
}

/** The codes `from` to `from + n - 1` of `prefix`. */
export function codesOf(prefix: string, n: number, from = 0): string[] {
  return Array.from({ length: n }, (_, i) => codeOf(prefix, from + i));
}

// -------------------------------------------------- the store's statement --

/** The store's take statement, as read from what the store sends. */
export interface TakeStatement {
  /** Its text, byte for byte. */
  readonly text: string;
}

/** A statement the driver reported writing (its `debug` option). */
interface Written {
  readonly text: string;
  readonly parameters: readonly unknown[];
}

/** A parameter as the driver will serialise it (jsonb: JSON text). */
function serialised(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/**
 * Reads the store's take statement from what the store sends: a store on a
 * pool whose `debug` hook records every statement written takes one code;
 * it must send exactly one statement, with one parameter, the JSON array of
 * the code's hash. The raw driver's send ({@linkcode rawSend}) then sends the
 * same text on the same pool, and what the driver wrote must be identical,
 * parameter included. Throws if not: the bench would compare with another
 * statement.
 */
export async function takeStatement(
  m: Major,
  url: string,
  admin: Sql,
  table: string,
): Promise<TakeStatement> {
  const prefix = crypto.randomUUID();
  await fill(admin, table, prefix, 2);
  const written: Written[] = [];
  const sql = await openPool(m, url, {
    max: 1,
    debug: (_: unknown, text: string, parameters: unknown[]) => {
      written.push({ text, parameters });
    },
  });
  try {
    const store = createCodeStore(sql, { table });
    written.length = 0;
    if (!await store.take(codeOf(prefix, 0))) {
      throw new Error("the store's take found no entry");
    }
    const sent = written.splice(0);
    const want = JSON.stringify([hashOf(codeOf(prefix, 0))]);
    if (
      sent.length !== 1 || sent[0]!.parameters.length !== 1 ||
      serialised(sent[0]!.parameters[0]) !== want
    ) {
      throw new Error(
        `a lone take on postgres.js ${m.version} sent ${sent.length} ` +
          `statement(s) with ${sent[0]?.parameters.length} parameter(s); ` +
          "the bench expects one statement whose one parameter is the JSON " +
          "array of the hashes: adapt bench/harness.ts (rawSend)",
      );
    }
    const { text } = sent[0]!;
    // The raw driver's send, on the same pool: the same bytes on the wire.
    const rows = await rawSend(sql, text, [hashOf(codeOf(prefix, 1))]);
    const raw = written.splice(0);
    if (
      rows !== 1 || raw.length !== 1 || raw[0]!.text !== text ||
      raw[0]!.parameters.length !== 1 ||
      serialised(raw[0]!.parameters[0]) !==
        JSON.stringify([hashOf(codeOf(prefix, 1))])
    ) {
      throw new Error(
        `the raw driver's send of the store's statement on postgres.js ` +
          `${m.version} differs from the store's`,
      );
    }
    return { text };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

// ----------------------------------------------------------- workloads --

/**
 * A statement through the raw driver, as the bench sends the store's own
 * and the plain one: one `sql.unsafe`,
 * prepared, with the keys as one JSON parameter. Resolves with the rows.
 */
export function rawSend(
  sql: Sql,
  text: string,
  keys: readonly string[],
): Promise<number> {
  return sql.unsafe(text, [sql.json(keys as string[])], { prepare: true })
    .then((rows) => rows.length);
}

/** A plain `DELETE ... RETURNING *` of the keys of `$1` (a JSON array). */
export function plainDelete(table: string): string {
  return `delete from ${table}
    where code_hash = any(array(select jsonb_array_elements_text($1)))
    returning *`;
}

/**
 * A workload: `loops` concurrent loops, each sending operation after
 * operation, `keysPerOp` keys each, until the run stops or the prepared
 * operations (`ops`, which `extend` adds to) are used up. `op(j)` resolves
 * with how many keys it found (rows returned, or entries taken).
 */
export interface Load {
  readonly loops: number;
  readonly keysPerOp: number;
  readonly ops: number;
  readonly op: (j: number) => Promise<number>;
  /** Adds operations on these codes (stored beforehand). */
  readonly extend: (codes: readonly string[]) => void;
}

/**
 * A load of operations on `keysPerOp` prepared inputs each, made from the
 * codes by `prepare` beforehand; a remainder short of a whole operation
 * is left out.
 */
function prepared<T>(
  loops: number,
  keysPerOp: number,
  codes: readonly string[],
  prepare: (codes: readonly string[]) => T,
  send: (input: T) => Promise<number>,
): Load {
  const inputs: T[] = [];
  const extend = (more: readonly string[]) => {
    for (let k = 0; k + keysPerOp <= more.length; k += keysPerOp) {
      inputs.push(prepare(more.slice(k, k + keysPerOp)));
    }
  };
  extend(codes);
  return {
    loops,
    keysPerOp,
    get ops() {
      return inputs.length;
    },
    op: (j) => send(inputs[j]!),
    extend,
  };
}

/** `callers` concurrent callers of the store's `take`, one code each. */
export function storeTakes(
  sql: Sql,
  table: string,
  codes: readonly string[],
  callers: number,
): Load {
  const store = createCodeStore(sql, { table });
  const found = (entry: unknown) => entry === null ? 0 : 1;
  return prepared(
    callers,
    1,
    codes,
    ([code]) => code!,
    (code) => store.take(code).then(found),
  );
}

/**
 * `statements` statements in flight through the raw driver, `keys` keys
 * each, `send` sending one (hashes computed beforehand).
 */
export function rawStatements(
  codes: readonly string[],
  statements: number,
  keys: number,
  send: (keys: readonly string[]) => Promise<number>,
): Load {
  return prepared(
    statements,
    keys,
    codes,
    (chunk) => chunk.map(hashOf),
    send,
  );
}

/**
 * The floor under the store's `take` on this hash: `callers` concurrent
 * callers, each code hashed by the store's `hashCode` (through
 * `@std/crypto`) as it is called, batched by the bare minimum: the calls of
 * a tick go out together in the store's statement through the raw driver,
 * spread over at most `slots` statements in flight in parts of at least 32
 * (the store's defaults), and each caller gets whether its hash came back.
 * No deadline, no checks, no cancel: what any store that hashes each code
 * this way and coalesces pays, and nothing more.
 */
export function hashedBatches(
  sql: Sql,
  text: string,
  codes: readonly string[],
  callers: number,
  slots = POOL / 2,
): Load {
  interface Call {
    readonly hash: string;
    readonly resolve: (found: number) => void;
    readonly reject: (error: unknown) => void;
  }
  let waiting: Call[] = [];
  let scheduled = false;
  let free = slots;
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(flush);
  };
  const flush = () => {
    scheduled = false;
    const parts = Math.max(1, Math.min(free, Math.floor(waiting.length / 32)));
    const size = Math.min(64, Math.ceil(waiting.length / parts));
    while (waiting.length > 0 && free > 0) {
      const batch = waiting.slice(0, size);
      waiting = waiting.slice(size);
      free--;
      sql.unsafe(text, [sql.json(batch.map((call) => call.hash))], {
        prepare: true,
      }).values().then((rows) => {
        // Each row is the entry's JSON array, its hash first.
        const found = new Set(
          rows.map((row) => (JSON.parse(row[0] as string) as string[])[0]),
        );
        for (const call of batch) call.resolve(found.has(call.hash) ? 1 : 0);
      }, (error) => {
        for (const call of batch) call.reject(error);
      }).finally(() => {
        free++;
        if (waiting.length > 0) schedule();
      });
    }
  };
  return prepared(
    callers,
    1,
    codes,
    ([code]) => code!,
    (code) =>
      new Promise<number>((resolve, reject) => {
        waiting.push({ hash: hashCode(code), resolve, reject });
        schedule();
      }),
  );
}

/**
 * One `DELETE ... RETURNING *` per call, as most servers write it (a tagged
 * template), `callers` at once.
 */
export function deletePerCall(
  sql: Sql,
  table: string,
  codes: readonly string[],
  callers: number,
): Load {
  return prepared(
    callers,
    1,
    codes,
    ([code]) => hashOf(code!),
    (hash) =>
      sql`delete from ${sql(table)} where code_hash = ${hash} returning *`
        .then((rows) => rows.length),
  );
}

// ------------------------------------------------------------------ runs --

/** A time-bounded run's figures, over its measured window. */
export interface Run {
  /** Keys completed in the window. */
  readonly keys: number;
  /** The window's length, seconds. */
  readonly seconds: number;
  /** Keys per second. */
  readonly perSecond: number;
  /** The process's CPU (user + system) per key, microseconds. */
  readonly cpuMicros: number;
  /** Operation latency percentiles, milliseconds. */
  readonly p50: number;
  readonly p99: number;
  /** The prepared operations ran out before the window ended. */
  readonly exhausted: boolean;
  /** Keys sent, warm-up included, and how many of them were found. */
  readonly sent: number;
  readonly found: number;
  /** The next operation not sent. */
  readonly next: number;
}

/** A run with its latencies (ms, sorted), to merge runs. */
export interface Timed {
  readonly run: Run;
  readonly latencies: readonly number[];
  /** CPU over the window, microseconds. */
  readonly cpu: number;
}

/**
 * Runs `load` for `warmupMs` (not counted), then `windowMs`, counting the
 * operations that complete in the window, their latency and the process's
 * CPU over it; the loops then finish what they have in flight. Starts at
 * operation `from`.
 */
export async function timed(
  load: Load,
  warmupMs: number,
  windowMs: number,
  from = 0,
): Promise<Timed> {
  let next = from;
  let phase: "warm" | "window" | "done" = "warm";
  let exhausted = false;
  let keys = 0;
  let sent = 0;
  let found = 0;
  const latencies: number[] = [];
  let cpuAtStart = process.cpuUsage();
  let started = performance.now();
  let used = { user: 0, system: 0 };
  let ended = started;
  const begin = () => {
    if (phase !== "warm") return;
    phase = "window";
    cpuAtStart = process.cpuUsage();
    started = performance.now();
  };
  const end = () => {
    if (phase !== "window") return;
    used = process.cpuUsage(cpuAtStart);
    ended = performance.now();
    phase = "done";
  };
  if (warmupMs === 0) begin();
  const timers = [
    setTimeout(begin, warmupMs),
    setTimeout(end, warmupMs + windowMs),
  ];
  try {
    await Promise.all(Array.from({ length: load.loops }, async () => {
      while (phase !== "done") {
        if (next >= load.ops) {
          exhausted = true;
          if (phase === "warm") phase = "done";
          end();
          break;
        }
        const j = next++;
        const t = performance.now();
        // Not `found += await ...`: that reads `found` before the await.
        const got = await load.op(j);
        found += got;
        sent += load.keysPerOp;
        if (phase === "window") {
          latencies.push(performance.now() - t);
          keys += load.keysPerOp;
        }
      }
    }));
  } catch (error) {
    phase = "done"; // the other loops stop too
    throw error;
  } finally {
    for (const timer of timers) clearTimeout(timer);
  }
  latencies.sort((a, b) => a - b);
  const cpu = used.user + used.system;
  return {
    run: runOf({
      keys,
      seconds: (ended - started) / 1000,
      cpu,
      latencies,
      exhausted,
      sent,
      found,
      next,
    }),
    latencies,
    cpu,
  };
}

/** A run's figures from its counts, CPU and sorted latencies. */
function runOf(
  counts:
    & Pick<Run, "keys" | "seconds" | "exhausted" | "sent" | "found" | "next">
    & {
      readonly cpu: number;
      readonly latencies: readonly number[];
    },
): Run {
  const { keys, seconds, cpu, latencies, exhausted, sent, found, next } =
    counts;
  const at = (p: number) => latencies[Math.floor(latencies.length * p)] ?? NaN;
  return {
    keys,
    seconds,
    perSecond: keys / seconds,
    cpuMicros: cpu / keys,
    p50: at(0.5),
    p99: at(0.99),
    exhausted,
    sent,
    found,
    next,
  };
}

/** The runs of one workload, slice after slice, as one run. */
export function merged(slices: readonly Timed[]): Run {
  const sum = (f: (s: Timed) => number) => slices.reduce((a, s) => a + f(s), 0);
  return runOf({
    keys: sum((s) => s.run.keys),
    seconds: sum((s) => s.run.seconds),
    cpu: sum((s) => s.cpu),
    latencies: slices.flatMap((s) => s.latencies).sort((a, b) => a - b),
    exhausted: slices.some((s) => s.run.exhausted),
    sent: sum((s) => s.run.sent),
    found: sum((s) => s.run.found),
    next: slices.at(-1)?.run.next ?? 0,
  });
}

/** Checks that the store hashes as {@linkcode hashOf} does. */
export function checkHash(): void {
  const code = codeOf(crypto.randomUUID(), 7);
  if (hashOf(code) !== hashCode(code)) {
    throw new Error("node:crypto and the store hash codes differently");
  }
}

/** The median of `values`. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? sorted[mid]!
    : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
