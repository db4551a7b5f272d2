/**
 * `deno task bench`: the store's `take` against the raw driver, on
 * postgres.js 3.4 and 4.x side by side in one run (#26), on `DATABASE_URL`
 * (an embedded PostgreSQL when it is unset). Prints a table and writes
 * `bench/results.json` and the generated part of `bench/README.md`.
 *
 * ```sh
 * DATABASE_URL=postgres://postgres@127.0.0.1:5432/test deno task bench
 * deno task bench --quick          # one short round, for a smoke run
 * deno task bench --rounds 5 --seconds 2 --out /tmp
 * ```
 *
 * Per major and round, three sets of workloads, each workload on a pool of
 * {@linkcode POOL} connections of its own with codes of its own (one fill
 * per set: tables truncated, filled, vacuumed, checkpointed), counting what
 * completes in fixed windows after a warm-up:
 *
 * 1. the raw driver sending the store's own take statement (its text read
 *    from what the store sends, see `takeStatement`), 64 keys in flight in
 *    four shapes, statements in flight × keys each: 1×64, 2×32, 4×16, 8×8;
 * 2. the store (its defaults) `take` at 64 concurrent callers, the best of
 *    those shapes again, the floor under the store on this hash (64
 *    callers, each code hashed through `@std/crypto`, batched bare over the
 *    raw driver: `hashedBatches`), a plain `DELETE ... RETURNING *` in the
 *    best shape, and one `DELETE ... RETURNING *` per call at 64 calls;
 * 3. a lone `take`, and the store's statement with one key through the raw
 *    driver, one at a time.
 *
 * The workloads of a set run in turns, slice by slice (1 s each, the order
 * alternating), so that each store figure and its raw reference see the
 * same host; each ratio is taken within a round, and the median of the
 * rounds reported. The order of the majors alternates from round to round.
 *
 * @module
 */

import { numberFlag, readFlags } from "../tools/flags.ts";
import {
  addCodes,
  type BenchDatabase,
  checkHash,
  codesOf,
  deletePerCall,
  fill,
  hashedBatches,
  type Load,
  type Major,
  MAJORS,
  median,
  merged,
  openPool,
  plainDelete,
  POOL,
  rawSend,
  rawStatements,
  type Run,
  type Sql,
  storeTakes,
  type TakeStatement,
  takeStatement,
  type Timed,
  timed,
  withBenchDatabase,
} from "./harness.ts";

const flags = readFlags(Deno.args, {
  quick: { type: "boolean", default: false },
  rounds: { type: "string" },
  slices: { type: "string" },
  seconds: { type: "string" },
  warmup: { type: "string" },
  out: { type: "string", default: "bench" },
});
const quick = flags.quick;

/** Rounds; every figure is the median of the rounds'. */
const ROUNDS = numberFlag("rounds", flags.rounds, quick ? 1 : 3, "count");
/** Slices of each workload in a round, in turn with the others'. */
const SLICES = numberFlag("slices", flags.slices, quick ? 1 : 3, "count");
/** A slice's measured window. */
const SLICE_MS = 1000 *
  numberFlag("seconds", flags.seconds, quick ? 0.2 : 1, "seconds");
/** Each workload's warm-up, once per round. */
const WARMUP_MS = 1000 *
  numberFlag("warmup", flags.warmup, quick ? 0.1 : 0.5, "seconds or 0");
// The results are written there at the end: make sure it can be, first.
await Deno.mkdir(flags.out, { recursive: true });
/** Each slice's ramp-up, not counted. */
const RAMP_MS = quick ? 50 : 100;
/** Slices of the shapes, to find the best (measured again beside the store). */
const SHAPE_SLICES = Math.min(SLICES, 2);
const CALLERS = 64;
/** Statements in flight × keys per statement: 64 keys in flight. */
const SHAPES = [[1, 64], [2, 32], [4, 16], [8, 8]] as const;

/** The issue's targets. */
const TARGETS = {
  throughput: { text: "≥ 0.8×", met: (r: number) => r >= 0.8 },
  cpu: { text: "≤ 2.5×", met: (r: number) => r <= 2.5 },
  lone: { text: "≤ 1.15×", met: (r: number) => r <= 1.15 },
} as const;

// ------------------------------------------------------------ measuring --

type Kind = "store" | "floor" | "own" | "plain" | "per call" | "lone";

/**
 * Keys per second guessed for a workload's first fill; afterwards the
 * fastest seen. A workload whose codes may run out gets more between
 * slices.
 */
const GUESS: Record<Kind, number> = {
  store: 25_000,
  floor: 25_000,
  own: 35_000,
  plain: 50_000,
  "per call": 10_000,
  lone: 2_500,
};
const seen = new Map<Kind, number>();

const log = (line: string) => console.error(line);

/** One workload of {@linkcode inTurns}. */
interface Side {
  readonly kind: Kind;
  readonly label: string;
  readonly make: (sql: Sql, codes: readonly string[]) => Load;
}

/**
 * Runs `sides` in turns on major `m`: each on a pool of its own, with codes
 * of its own from one fill; each warmed up, then `slices` slices of
 * `SLICE_MS`, one side after the other (the order reversed every other
 * slice, and in a `reversed` round), each after a short ramp-up. A side
 * whose codes may run out in its next slice gets more first. Returns each
 * side's slices as one run.
 */
async function inTurns(
  ctx: BenchDatabase,
  m: Major,
  sides: readonly Side[],
  reversed: boolean,
  slices = SLICES,
): Promise<Run[]> {
  const rate = (side: Side) => seen.get(side.kind) ?? GUESS[side.kind];
  const seconds = (WARMUP_MS + slices * (RAMP_MS + SLICE_MS)) / 1000;
  const sizes = sides.map((side) =>
    Math.ceil(rate(side) * seconds * 1.2) + 1024
  );
  const prefix = crypto.randomUUID();
  await fill(
    ctx.admin,
    ctx.table,
    prefix,
    sizes.reduce((a, b) => a + b, 0),
  );
  const pools: Sql[] = [];
  try {
    const loads: Load[] = [];
    let offset = 0;
    for (const [i, side] of sides.entries()) {
      const sql = await openPool(m, ctx.url);
      pools.push(sql);
      const codes = codesOf(prefix, sizes[i]!, offset);
      offset += sizes[i]!;
      loads.push(side.make(sql, codes));
    }
    const next = loads.map(() => 0);
    const rates = sides.map(rate);
    const run = async (i: number, rampMs: number, ms: number) => {
      const load = loads[i]!;
      const left = (load.ops - next[i]!) * load.keysPerOp;
      const needed = rates[i]! * (rampMs + ms) / 1000 * 2 +
        load.loops * load.keysPerOp * 2;
      if (left < needed) {
        const more = crypto.randomUUID();
        const n = Math.ceil(needed * 2);
        await addCodes(ctx.admin, ctx.table, more, n);
        load.extend(codesOf(more, n));
      }
      const t = await timed(load, rampMs, ms, next[i]);
      next[i] = t.run.next;
      if (t.run.keys > 0) rates[i] = Math.max(rates[i]!, t.run.perSecond);
      return t;
    };
    const warmups: Timed[] = [];
    for (const i of sides.keys()) warmups.push(await run(i, WARMUP_MS, 0));
    const all: Timed[][] = sides.map(() => []);
    for (let k = 0; k < slices; k++) {
      const order = [...sides.keys()];
      if ((k % 2 === 1) !== reversed) order.reverse();
      for (const i of order) all[i]!.push(await run(i, RAMP_MS, SLICE_MS));
    }
    const runs = all.map(merged);
    for (const [i, side] of sides.entries()) {
      const r = runs[i]!;
      const sent = r.sent + warmups[i]!.run.sent;
      const found = r.found + warmups[i]!.run.found;
      if (found !== sent) {
        throw new Error(`${side.label}: ${found} of ${sent} keys found`);
      }
      seen.set(side.kind, Math.max(seen.get(side.kind) ?? 0, r.perSecond));
      log(
        `  ${m.version} ${side.label}: ${Math.round(r.perSecond)}/s, p50 ${
          r.p50.toFixed(2)
        } ms, ${r.cpuMicros.toFixed(1)} µs CPU per key${
          r.exhausted ? " (its codes ran out in a slice)" : ""
        }`,
      );
    }
    return runs;
  } finally {
    await Promise.all(pools.map((sql) => sql.end({ timeout: 5 })));
  }
}

/** One round on one major. */
interface Round {
  /** The store's statement through the raw driver, by shape. */
  readonly shapes: Record<string, Run>;
  /** The fastest shape. */
  readonly best: string;
  /** `take` at 64 callers. */
  readonly store: Run;
  /** The store's statement in the best shape, in turns with `store`. */
  readonly own: Run;
  /** The floor: 64 callers hashed and batched bare (`hashedBatches`). */
  readonly floor: Run;
  /** A plain `DELETE ... RETURNING *`, in the best shape. */
  readonly plain: Run;
  /** One `DELETE ... RETURNING *` per call, 64 calls. */
  readonly perCall: Run;
  /** A lone take, and its statement with one key through the raw driver. */
  readonly loneStore: Run;
  readonly loneRaw: Run;
}

const shapeName = (statements: number, keys: number) => `${statements}×${keys}`;

/**
 * One round on one major, three sets of workloads in turns: the raw
 * driver's shapes, to find the best; the store at 64 callers, the best
 * shape, the plain statement in that shape and one statement per call; the
 * lone take and its statement.
 */
async function round(
  ctx: BenchDatabase,
  m: Major,
  statement: TakeStatement,
  reversed: boolean,
): Promise<Round> {
  const { table } = ctx;
  const inShape = (
    kind: Kind,
    label: string,
    [statements, keys]: readonly [number, number],
    text: string,
  ): Side => ({
    kind,
    label: `${label}, ${shapeName(statements, keys)}`,
    make: (sql, codes) =>
      rawStatements(
        codes,
        statements,
        keys,
        (batch) => rawSend(sql, text, batch),
      ),
  });
  const own = "raw, the store's statement";
  const shapeRuns = await inTurns(
    ctx,
    m,
    SHAPES.map((shape) => inShape("own", own, shape, statement.text)),
    reversed,
    SHAPE_SLICES,
  );
  const shapes = Object.fromEntries(
    SHAPES.map(([s, k], i) => [shapeName(s, k), shapeRuns[i]!]),
  );
  const best =
    Object.entries(shapes).reduce((a, b) =>
      b[1].perSecond > a[1].perSecond ? b : a
    )[0];
  const shape = best.split("×").map(Number) as [number, number];
  const [store, ownBest, floor, plain, perCall] = await inTurns(ctx, m, [
    {
      kind: "store",
      label: "take, 64 callers",
      make: (sql, codes) => storeTakes(sql, table, codes, CALLERS),
    },
    inShape("own", own, shape, statement.text),
    {
      kind: "floor",
      label: "the floor: 64 callers hashed, batched bare, raw",
      make: (sql, codes) => hashedBatches(sql, statement.text, codes, CALLERS),
    },
    inShape(
      "plain",
      "raw, plain DELETE ... RETURNING",
      shape,
      plainDelete(table),
    ),
    {
      kind: "per call",
      label: "raw, one DELETE ... RETURNING per call, 64 calls",
      make: (sql, codes) => deletePerCall(sql, table, codes, CALLERS),
    },
  ], reversed) as [Run, Run, Run, Run, Run];
  const [loneStore, loneRaw] = await inTurns(ctx, m, [
    {
      kind: "lone",
      label: "lone take",
      make: (sql, codes) => storeTakes(sql, table, codes, 1),
    },
    inShape("lone", `${own}, one at a time`, [1, 1], statement.text),
  ], reversed) as [Run, Run];
  return {
    shapes,
    best,
    store,
    own: ownBest,
    floor,
    plain,
    perCall,
    loneStore,
    loneRaw,
  };
}

// ----------------------------------------------------------- summarising --

/** One ratio against its target. */
interface Judged {
  /** Median of the rounds' ratios. */
  readonly ratio: number;
  /** Each round's. */
  readonly rounds: readonly number[];
  readonly target: string;
  readonly met: boolean;
}

/** A major's medians over the rounds. */
interface Summary {
  readonly version: string;
  readonly take64: { perSecond: number; p50: number; p99: number };
  readonly own: { perSecond: number; shapes: readonly string[] };
  readonly shapes: Record<string, { perSecond: number; cpuMicros: number }>;
  readonly plain: number;
  readonly perCall: number;
  readonly cpu: { store: number; raw: number; floor: number };
  /** The floor's figures, and the ratios that place the store on it. */
  readonly floor: {
    readonly perSecond: number;
    /** Floor ÷ raw own statement: what the hash and the callers cost. */
    readonly throughput: number;
    readonly cpu: number;
    /** Store ÷ floor: what the store adds to them. */
    readonly storeThroughput: number;
    readonly storeCpu: number;
  };
  readonly lone: { storeP50: number; storeP99: number; rawP50: number };
  readonly ratios: {
    readonly throughput: Judged;
    readonly cpu: Judged;
    readonly lone: Judged;
  };
}

function judged(
  rounds: readonly number[],
  target: (typeof TARGETS)[keyof typeof TARGETS],
): Judged {
  const ratio = median(rounds);
  return { ratio, rounds, target: target.text, met: target.met(ratio) };
}

function summarise(version: string, rounds: readonly Round[]): Summary {
  const med = (f: (r: Round) => number) => median(rounds.map(f));
  const best = (r: Round) => r.own;
  return {
    version,
    take64: {
      perSecond: med((r) => r.store.perSecond),
      p50: med((r) => r.store.p50),
      p99: med((r) => r.store.p99),
    },
    own: {
      perSecond: med((r) => best(r).perSecond),
      shapes: rounds.map((r) => r.best),
    },
    shapes: Object.fromEntries(
      SHAPES.map(([s, k]) => shapeName(s, k)).map((name) => [name, {
        perSecond: med((r) => r.shapes[name]!.perSecond),
        cpuMicros: med((r) => r.shapes[name]!.cpuMicros),
      }]),
    ),
    plain: med((r) => r.plain.perSecond),
    perCall: med((r) => r.perCall.perSecond),
    cpu: {
      store: med((r) => r.store.cpuMicros),
      raw: med((r) => best(r).cpuMicros),
      floor: med((r) => r.floor.cpuMicros),
    },
    floor: {
      perSecond: med((r) => r.floor.perSecond),
      throughput: med((r) => r.floor.perSecond / best(r).perSecond),
      cpu: med((r) => r.floor.cpuMicros / best(r).cpuMicros),
      storeThroughput: med((r) => r.store.perSecond / r.floor.perSecond),
      storeCpu: med((r) => r.store.cpuMicros / r.floor.cpuMicros),
    },
    lone: {
      storeP50: med((r) => r.loneStore.p50),
      storeP99: med((r) => r.loneStore.p99),
      rawP50: med((r) => r.loneRaw.p50),
    },
    ratios: {
      throughput: judged(
        rounds.map((r) => r.store.perSecond / best(r).perSecond),
        TARGETS.throughput,
      ),
      cpu: judged(
        rounds.map((r) => r.store.cpuMicros / best(r).cpuMicros),
        TARGETS.cpu,
      ),
      lone: judged(
        rounds.map((r) => r.loneStore.p50 / r.loneRaw.p50),
        TARGETS.lone,
      ),
    },
  };
}

// ------------------------------------------------------------------ run --

/** What `bench/results.json` holds. */
interface Results {
  readonly machine: typeof machine;
  readonly server: {
    readonly kind: "embedded" | "DATABASE_URL";
    readonly version: string;
    readonly fsync: string;
    readonly synchronousCommit: string;
  };
  readonly setup: {
    readonly pool: number;
    readonly store: string;
    readonly callers: number;
    readonly shapes: readonly string[];
    readonly rounds: number;
    readonly slices: number;
    readonly sliceSeconds: number;
    readonly warmupSeconds: number;
    readonly quick: boolean;
    minutes: number;
  };
  /** The store's take statement, as both majors sent it. */
  readonly takeStatement: string;
  readonly majors: readonly {
    readonly summary: Summary;
    readonly rounds: readonly Round[];
  }[];
}

const loadAverage = async () =>
  (await Deno.readTextFile("/proc/loadavg").catch(() => "")).split(" ")
    .slice(0, 3).join(" ") || "unknown";

const startedAt = performance.now();
const machine = {
  cpu: (await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))
    .match(/model name\s*:\s*(.*)/)?.[1] ?? Deno.build.arch,
  cores: navigator.hardwareConcurrency,
  memoryGiB: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
  os: `${Deno.build.os} ${Deno.osRelease()}`,
  deno: Deno.version.deno,
  date: new Date().toISOString(),
  loadBefore: await loadAverage(),
  loadAfter: "",
};

checkHash();
const results = await withBenchDatabase("bench", async (ctx) => {
  const { url, admin, table } = ctx;
  const [settings] = await admin<
    [{ version: string; fsync: string; sync: string }]
  >`
    select current_setting('server_version') as version,
      current_setting('fsync') as fsync,
      current_setting('synchronous_commit') as sync
  `;
  const statements = new Map<Major, TakeStatement>();
  for (const m of MAJORS) {
    statements.set(m, await takeStatement(m, url, admin, table));
  }
  const rounds = new Map<Major, Round[]>(MAJORS.map((m) => [m, []]));
  for (let r = 0; r < ROUNDS; r++) {
    const reversed = r % 2 === 1;
    log(`round ${r + 1} of ${ROUNDS} (load ${await loadAverage()})`);
    for (const m of reversed ? [...MAJORS].reverse() : MAJORS) {
      rounds.get(m)!.push(await round(ctx, m, statements.get(m)!, reversed));
    }
  }
  machine.loadAfter = await loadAverage();
  const results: Results = {
    machine,
    server: {
      kind: ctx.embedded ? "embedded" : "DATABASE_URL",
      version: settings.version,
      fsync: settings.fsync,
      synchronousCommit: settings.sync,
    },
    setup: {
      pool: POOL,
      store: "createCodeStore defaults (coalescing, maxBatch 64, " +
        `maxConnections ${Math.ceil(POOL / 2)}: half the pool)`,
      callers: CALLERS,
      shapes: SHAPES.map(([s, k]) => shapeName(s, k)),
      rounds: ROUNDS,
      slices: SLICES,
      sliceSeconds: SLICE_MS / 1000,
      warmupSeconds: WARMUP_MS / 1000,
      quick,
      minutes: 0,
    },
    takeStatement: statements.get(MAJORS[1]!)!.text,
    majors: MAJORS.map((m) => ({
      summary: summarise(m.version, rounds.get(m)!),
      rounds: rounds.get(m)!,
    })),
  };
  results.setup.minutes = Math.round((performance.now() - startedAt) / 6e3) /
    10;
  return results;
});
await Deno.writeTextFile(
  `${flags.out}/results.json`,
  JSON.stringify(results, null, 2) + "\n",
);
const generated = report(results);
// The generated part goes between the markers of README.md; the text
// around it is kept.
const page = `${flags.out}/README.md`;
const START = "<!-- bench:start -->";
const END = "<!-- bench:end -->";
const existing = await Deno.readTextFile(page).catch(() => "");
await Deno.writeTextFile(
  page,
  existing.includes(START) && existing.includes(END)
    ? existing.slice(0, existing.indexOf(START)) +
      `${START}\n\n${generated}\n${END}` +
      existing.slice(existing.indexOf(END) + END.length)
    : `# Benchmarks\n\n${START}\n\n${generated}\n${END}\n`,
);
// As `deno fmt` lays it out, so that the checked-in page stays formatted.
await new Deno.Command(Deno.execPath(), {
  args: ["fmt", "--quiet", page],
  stdout: "null",
  stderr: "null",
}).output().catch(() => {});
console.log(generated);

// --------------------------------------------------------------- report --

function report(r: Results): string {
  const [a, b] = r.majors.map((x) => x.summary) as [Summary, Summary];
  const n = (x: number) => Math.round(x).toLocaleString("en");
  const ms = (x: number) => `${x.toFixed(2)} ms`;
  const us = (x: number) => `${x.toFixed(1)} µs`;
  const times = (x: number) => `${x.toFixed(2)}×`;
  const ratio = (j: Judged) =>
    `**${j.ratio.toFixed(2)}×** ${j.met ? "met" : "missed"}`;
  const row = (cells: readonly string[]) => `| ${cells.join(" | ")} |`;
  const both = (figure: string, target: string, f: (s: Summary) => string) =>
    row([figure, target, f(a), f(b)]);
  const m = r.machine;
  const s = r.server;
  const durable = s.fsync === "on" && s.synchronousCommit === "on";
  return [
    "## What to expect",
    "",
    `On ${m.cores} cores (${m.cpu}, ${m.memoryGiB} GiB, ${m.os}) shared by the`,
    `client and PostgreSQL ${s.version.split(" ")[0]} ${
      s.kind === "embedded" ? "(embedded" : "(local"
    }, ${
      durable
        ? "durable: fsync and synchronous_commit on)"
        : `fsync ${s.fsync}, synchronous_commit ${s.synchronousCommit})`
    }, a store with its defaults on a pool of ${r.setup.pool} connections:`,
    "",
    row(["", `postgres.js ${a.version}`, `postgres.js ${b.version}`]),
    row(["---", "---", "---"]),
    row([
      "`take` at 64 concurrent callers",
      ...[a, b].map((x) =>
        `${n(x.take64.perSecond)} takes/s, p50 ${ms(x.take64.p50)}, p99 ${
          ms(x.take64.p99)
        }`
      ),
    ]),
    row([
      "a lone `take` (one caller)",
      ...[a, b].map((x) =>
        `p50 ${ms(x.lone.storeP50)}, p99 ${ms(x.lone.storeP99)}`
      ),
    ]),
    row([
      "client CPU per `take` at 64 callers",
      ...[a, b].map((x) => us(x.cpu.store)),
    ]),
    "",
    `Generated by \`deno task bench\` on ${m.date.slice(0, 10)}${
      r.setup.quick ? " (quick run: not figures to quote)" : ""
    }, in ${r.setup.minutes} min: medians of ${r.setup.rounds} round${
      r.setup.rounds > 1 ? "s" : ""
    }, each figure of a round over ${r.setup.slices} slice${
      r.setup.slices > 1 ? "s" : ""
    } of ${r.setup.sliceSeconds} s in turn with its reference. Load average ${m.loadBefore} before, ${m.loadAfter} after.`,
    "",
    "## The store against the raw driver",
    "",
    both("figure", "target", (x) => `postgres.js ${x.version}`),
    row(["---", "---", "---", "---"]),
    both("`take` at 64 callers, takes/s", "", (x) => n(x.take64.perSecond)),
    both(
      "raw driver, the store's own take statement, 64 keys in flight, best shape (statements × keys)",
      "",
      (x) => `${n(x.own.perSecond)} (${[...new Set(x.own.shapes)].join(", ")})`,
    ),
    both(
      "store ÷ raw own statement",
      TARGETS.throughput.text,
      (x) => ratio(x.ratios.throughput),
    ),
    both(
      "raw plain `DELETE … RETURNING *`, 64 in flight, same shape",
      "",
      (x) => n(x.plain),
    ),
    both(
      "one `DELETE … RETURNING *` per call, 64 calls (what most servers write)",
      "",
      (x) => n(x.perCall),
    ),
    both("client CPU per take (store)", "", (x) => us(x.cpu.store)),
    both("client CPU per take (the floor)", "", (x) => us(x.cpu.floor)),
    both(
      "client CPU per key (raw own statement, best shape)",
      "",
      (x) => us(x.cpu.raw),
    ),
    both(
      "store's CPU per take ÷ raw statement's per key",
      TARGETS.cpu.text,
      (x) => ratio(x.ratios.cpu),
    ),
    both(
      "the floor: 64 callers, each code hashed through `@std/crypto`, batched bare over the raw driver, takes/s",
      "",
      (x) => n(x.floor.perSecond),
    ),
    both(
      "floor ÷ raw own statement: throughput, CPU",
      "",
      (x) => `${times(x.floor.throughput)}, ${times(x.floor.cpu)}`,
    ),
    both(
      "store ÷ floor: throughput, CPU",
      "",
      (x) => `${times(x.floor.storeThroughput)}, ${times(x.floor.storeCpu)}`,
    ),
    both("lone take p50", "", (x) => ms(x.lone.storeP50)),
    both(
      "its own statement, one key, through the raw driver, p50",
      "",
      (x) => ms(x.lone.rawP50),
    ),
    both(
      "lone take p50 ÷ its own statement's",
      TARGETS.lone.text,
      (x) => ratio(x.ratios.lone),
    ),
    "",
    "The raw driver sending the store's statement, by shape (medians; the",
    "CPU per key falls with the statements per key):",
    "",
    row(["statements in flight × keys each", a.version, b.version]),
    row(["---", "---", "---"]),
    ...Object.keys(a.shapes).map((shape) =>
      row([
        shape,
        ...[a, b].map((x) =>
          `${n(x.shapes[shape]!.perSecond)} keys/s, ${
            us(x.shapes[shape]!.cpuMicros)
          } CPU per key`
        ),
      ])
    ),
    "",
    "Each round's ratios (throughput, CPU, lone p50): " +
    [a, b].map((x) =>
      `${x.version}: ${
        x.ratios.throughput.rounds.map((t, i) =>
          `${t.toFixed(2)}/${x.ratios.cpu.rounds[i]!.toFixed(2)}/${
            x.ratios.lone.rounds[i]!.toFixed(2)
          }`
        ).join(", ")
      }`
    ).join("; ") + ".",
    "",
  ].join("\n");
}
