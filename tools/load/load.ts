/**
 * Races `take()` across OS processes at any scale: the engine behind the
 * multi-process race tests, the CI load test and `deno task soak`.
 *
 * The parent spawns `load_worker.ts` processes, has them store the codes,
 * then walks the codes in rounds: every process races every code of a round
 * at once, and the parent counts, per code, how many callers got its entry.
 *
 * @module
 */

import postgres from "postgres";
import type { PoolOptions, WorkerPlan } from "./load_plan.ts";

/** A load run. */
export interface LoadOptions {
  /** The table (migrated). */
  readonly table: string;
  /** How many codes. */
  readonly codes: number;
  /** How many OS processes. */
  readonly processes: number;
  /** Pools per process, and connections per pool (default 10). */
  readonly poolsPerProcess: number;
  readonly connections?: number;
  /** Concurrent takes of each code in each process. */
  readonly racersPerProcess: number;
  /** Codes per round (default 1000). */
  readonly round?: number;
  /** postgres.js options for the workers' pools. */
  readonly poolOptions?: PoolOptions;
  /** The server. */
  readonly url: string;
  /** Called after each round. */
  readonly onProgress?: (done: number, report: LoadReport) => void;
}

/** What happened. */
export interface LoadReport {
  codes: number;
  stored: number;
  takes: number;
  /** Codes whose entry exactly one caller got. */
  winners: number;
  /** Codes whose entry more than one caller got (must be 0). */
  doubleRedemptions: number;
  /** Codes no caller got. */
  unredeemed: number;
  /** Winners handed a grant other than the one stored (must be 0). */
  mismatches: number;
  nulls: number;
  /** Errors by kind (postgres.js `code`, or the error's name). */
  errors: Record<string, number>;
  putSeconds: number;
  takeSeconds: number;
  takesPerSecond: number;
  /** Rows left in the table afterwards. */
  rowsLeft: number;
}

const WORKER = new URL("./load_worker.ts", import.meta.url).pathname;

/** Runs the load and reports. */
export async function runLoad(options: LoadOptions): Promise<LoadReport> {
  const url = options.url;
  const round = options.round ?? 1000;
  const seed = crypto.randomUUID();
  const workers = Array.from(
    { length: options.processes },
    (_, index) =>
      new LoadWorker({
        op: "init",
        url,
        poolOptions: options.poolOptions ?? {},
        table: options.table,
        seed,
        codes: options.codes,
        index,
        processes: options.processes,
        pools: options.poolsPerProcess,
        connections: options.connections ?? 10,
        racers: options.racersPerProcess,
      }),
  );
  const report: LoadReport = {
    codes: options.codes,
    stored: 0,
    takes: 0,
    winners: 0,
    doubleRedemptions: 0,
    unredeemed: 0,
    mismatches: 0,
    nulls: 0,
    errors: {},
    putSeconds: 0,
    takeSeconds: 0,
    takesPerSecond: 0,
    rowsLeft: -1,
  };
  try {
    await Promise.all(workers.map((w) => w.ready));
    let started = performance.now();
    for (const result of await all(workers, { op: "put" })) {
      report.stored += result.stored as number;
      merge(report.errors, result.errors as Record<string, number>);
    }
    report.putSeconds = (performance.now() - started) / 1000;

    const wins = new Uint8Array(options.codes);
    started = performance.now();
    for (let from = 0; from < options.codes; from += round) {
      const to = Math.min(from + round, options.codes);
      for (const result of await all(workers, { op: "take", from, to })) {
        for (const i of result.won as number[]) wins[i]!++;
        report.nulls += result.nulls as number;
        report.mismatches += result.mismatches as number;
        merge(report.errors, result.errors as Record<string, number>);
      }
      report.takes = to * options.processes * options.racersPerProcess;
      report.takeSeconds = (performance.now() - started) / 1000;
      report.takesPerSecond = report.takes / report.takeSeconds;
      tally(report, wins, from, to);
      options.onProgress?.(to, report);
    }
  } finally {
    await Promise.all(workers.map((w) => w.close()));
  }
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [{ n }] = await sql<[{ n: number }]>`
      select count(*)::int as n from ${sql(options.table)}
    `;
    report.rowsLeft = n;
  } finally {
    await sql.end({ timeout: 5 });
  }
  return report;
}

/** Counts the outcome of codes [from, to), each raced in one round only. */
function tally(report: LoadReport, wins: Uint8Array, from: number, to: number) {
  for (let i = from; i < to; i++) {
    const n = wins[i]!;
    if (n === 1) report.winners++;
    else if (n === 0) report.unredeemed++;
    else report.doubleRedemptions++;
  }
}

function merge(into: Record<string, number>, from: Record<string, number>) {
  for (const [kind, n] of Object.entries(from)) {
    into[kind] = (into[kind] ?? 0) + n;
  }
}

/** Sends one command to every worker and waits for every answer. */
function all(workers: LoadWorker[], command: object) {
  return Promise.all(workers.map((w) => w.send(command)));
}

/** A worker process, spoken to in JSON lines. */
class LoadWorker {
  readonly ready: Promise<Record<string, unknown>>;
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(init: { op: "init" } & WorkerPlan) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", WORKER],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reader = this.#child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    this.ready = this.send(init);
  }

  async send(command: object) {
    await this.#writer.write(
      new TextEncoder().encode(JSON.stringify(command) + "\n"),
    );
    while (!this.#buffer.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("a load worker exited early");
      this.#buffer += value;
    }
    const index = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, index);
    this.#buffer = this.#buffer.slice(index + 1);
    return JSON.parse(line) as Record<string, unknown>;
  }

  async close() {
    try {
      await this.#writer.write(new TextEncoder().encode('{"op":"exit"}\n'));
      await this.#writer.close();
    } catch {
      this.#child.kill();
    }
    await this.#reader.cancel().catch(() => {});
    await this.#child.status;
  }
}
