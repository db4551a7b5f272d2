/**
 * Races `take()` across OS processes at any scale: the engine behind the
 * multi-process race tests, the CI load test, the failover test and
 * `deno task soak`.
 *
 * A {@linkcode LoadRun} spawns `load_worker.ts` processes, has them store
 * the codes, then races codes: every process takes every code of a round
 * at once, and the parent collects, per code, how many callers got its
 * entry and whether any call for it failed. {@linkcode runLoad} runs every
 * code once, in rounds, and reports.
 *
 * @module
 */

import postgres from "../postgres.ts";
import type { PoolOptions, StoreOptions, WorkerPlan } from "./load_plan.ts";

/** A load run. */
export interface LoadOptions {
  /** The server. */
  readonly url: string;
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
  /** postgres.js options for the workers' pools (JSON). */
  readonly poolOptions?: PoolOptions;
  /** `createCodeStore` options for the workers' stores (JSON). */
  readonly storeOptions?: StoreOptions;
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
  /** Rejections no one handled, in all workers (must be 0). */
  unhandled: number;
  putSeconds: number;
  takeSeconds: number;
  takesPerSecond: number;
  /** Rows left in the table afterwards. */
  rowsLeft: number;
}

/** The outcome of racing some codes. */
export interface RaceResult {
  /** Per code index raced: how many callers got its entry. */
  readonly wins: Map<number, number>;
  /** Code indexes for which at least one call failed. */
  readonly errored: Set<number>;
  readonly nulls: number;
  readonly mismatches: number;
  readonly errors: Record<string, number>;
  readonly unhandled: number;
}

const WORKER = new URL("./load_worker.ts", import.meta.url).pathname;

/** Worker processes, each with its pools and stores. */
export class LoadRun implements AsyncDisposable {
  readonly options: LoadOptions;
  #workers: LoadWorker[];

  private constructor(options: LoadOptions, workers: LoadWorker[]) {
    this.options = options;
    this.#workers = workers;
  }

  /** Spawns the workers and opens every connection of every pool. */
  static async start(options: LoadOptions): Promise<LoadRun> {
    const seed = crypto.randomUUID();
    const workers = Array.from(
      { length: options.processes },
      (_, index) =>
        new LoadWorker({
          op: "init",
          url: options.url,
          poolOptions: options.poolOptions ?? {},
          storeOptions: options.storeOptions ?? {},
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
    const run = new LoadRun(options, workers);
    try {
      await Promise.all(workers.map((w) => w.ready));
    } catch (error) {
      await run[Symbol.asyncDispose]();
      throw error;
    }
    return run;
  }

  /** The seed the codes are derived from (see `load_plan.ts`). */
  get seed(): string {
    return this.#workers[0]!.seed;
  }

  /** Stores every code, each process its share. */
  async put(): Promise<{ stored: number; errors: Record<string, number> }> {
    let stored = 0;
    const errors: Record<string, number> = {};
    for (const result of await this.#all({ op: "put" })) {
      stored += result.stored as number;
      merge(errors, result.errors as Record<string, number>);
    }
    return { stored, errors };
  }

  /** Races the codes [from, to), or the given code indexes. */
  async race(codes: { from: number; to: number } | number[]): Promise<
    RaceResult
  > {
    const command = Array.isArray(codes)
      ? { op: "take", codes }
      : { op: "take", ...codes };
    const wins = new Map<number, number>();
    const errored = new Set<number>();
    const errors: Record<string, number> = {};
    let nulls = 0;
    let mismatches = 0;
    let unhandled = 0;
    for (const result of await this.#all(command)) {
      for (const i of result.won as number[]) {
        wins.set(i, (wins.get(i) ?? 0) + 1);
      }
      for (const i of result.errored as number[]) errored.add(i);
      nulls += result.nulls as number;
      mismatches += result.mismatches as number;
      unhandled += result.unhandled as number;
      merge(errors, result.errors as Record<string, number>);
    }
    return { wins, errored, nulls, mismatches, errors, unhandled };
  }

  /**
   * Has every pool run as many concurrent 0.2 s queries as it has
   * connections, and returns, per pool, how many distinct backends ran
   * them: a pool that lost a connection has fewer.
   */
  async poolBackends(): Promise<number[]> {
    const results = await this.#all({ op: "pools" });
    return results.flatMap((result) => result.backends as number[]);
  }

  #all(command: object) {
    return Promise.all(this.#workers.map((w) => w.send(command)));
  }

  /** Ends every worker (and its pools). */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.close()));
  }
}

/** Runs the load: stores every code, races each once, and reports. */
export async function runLoad(options: LoadOptions): Promise<LoadReport> {
  const round = options.round ?? 1000;
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
    unhandled: 0,
    putSeconds: 0,
    takeSeconds: 0,
    takesPerSecond: 0,
    rowsLeft: -1,
  };
  {
    await using run = await LoadRun.start(options);
    let started = performance.now();
    const { stored, errors } = await run.put();
    report.stored = stored;
    merge(report.errors, errors);
    report.putSeconds = (performance.now() - started) / 1000;

    started = performance.now();
    for (let from = 0; from < options.codes; from += round) {
      const to = Math.min(from + round, options.codes);
      const result = await run.race({ from, to });
      report.nulls += result.nulls;
      report.mismatches += result.mismatches;
      report.unhandled += result.unhandled;
      merge(report.errors, result.errors);
      for (let i = from; i < to; i++) {
        const n = result.wins.get(i) ?? 0;
        if (n === 1) report.winners++;
        else if (n === 0) report.unredeemed++;
        else report.doubleRedemptions++;
      }
      report.takes = to * options.processes * options.racersPerProcess;
      report.takeSeconds = (performance.now() - started) / 1000;
      report.takesPerSecond = report.takes / report.takeSeconds;
      options.onProgress?.(to, report);
    }
  }
  const sql = postgres(options.url, { max: 1, onnotice: () => {} });
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

function merge(into: Record<string, number>, from: Record<string, number>) {
  for (const [kind, n] of Object.entries(from)) {
    into[kind] = (into[kind] ?? 0) + n;
  }
}

/** A worker process, spoken to in JSON lines. */
class LoadWorker {
  readonly ready: Promise<Record<string, unknown>>;
  readonly seed: string;
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(init: { op: "init" } & WorkerPlan) {
    this.seed = init.seed;
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
