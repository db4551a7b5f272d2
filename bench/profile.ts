/**
 * `deno task profile`: where the store's client CPU goes per `take`, next
 * to the raw driver sending the store's own statement, on postgres.js 3.4
 * and 4.x. Each workload runs in a child process under V8's CPU profiler
 * (`--cpu-prof`): a warm-up, an idle pause, the measured window, another
 * pause; only the samples between the pauses count. Each frame's self time
 * is summed by where its code lives:
 *
 * - **store**: `mod.ts` and `src/`, but for the two below;
 * - **seam**: `src/driver/`, the driver seam;
 * - **hash**: `src/hash_code.ts`, `src/_platform.ts` and `@std/crypto`
 *   (here the local stand-in for `digestSync`, not the real package's WASM);
 * - **postgres.js**: the driver;
 * - **runtime**: Deno's own JavaScript (`ext:`, `node:`) and native code;
 * - **GC**: V8's garbage collector;
 *
 * and printed per take (store) and per key (raw), with the process's whole
 * CPU (`process.cpuUsage`, all threads) over the same window, and the
 * frames where the store's take spends the most.
 *
 * ```sh
 * DATABASE_URL=postgres://postgres@127.0.0.1:5432/test deno task profile
 * deno task profile --major 4 --callers 1 --top 40
 * ```
 *
 * Options: `--major 3|4` (default both), `--callers N` (default 64; 1
 * profiles a lone take against one key per statement), `--shape SxK` (the
 * raw driver's statements in flight × keys each, default 2x32 at 64
 * callers), `--against raw|floor` (what the store is profiled against:
 * the raw driver, by default, or the bench's floor, `hashedBatches`, at as
 * many callers: where the store spends more than hashing and coalescing
 * must), `--seconds` (the window, default 4), `--top N` (frames listed,
 * default 25).
 *
 * @module
 */

import { join } from "node:path";
import process from "node:process";
import { choiceFlag, numberFlag, readFlags, refuse } from "../tools/flags.ts";
import {
  codesOf,
  fill,
  hashedBatches,
  type Load,
  type Major,
  major,
  MAJORS,
  openPool,
  rawSend,
  rawStatements,
  type Sql,
  storeTakes,
  takeStatement,
  timed,
  withBenchDatabase,
} from "./harness.ts";

const BUCKETS = [
  "store",
  "seam",
  "hash",
  "postgres.js",
  "callers",
  "runtime",
  "GC",
] as const;
type Bucket = typeof BUCKETS[number];

/** Microseconds of main-thread self time per key, by bucket. */
export type Breakdown = Record<Bucket | "main thread" | "process CPU", number>;

interface Frame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber?: number;
}

interface Profile {
  readonly nodes: readonly { id: number; callFrame: Frame }[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

function bucket({ functionName, url }: Frame): Bucket {
  if (functionName === "(garbage collector)") return "GC";
  if (
    url.includes("/std/crypto/") || url.includes("std__crypto") ||
    url.includes("@std/crypto") || url.endsWith("/src/hash_code.ts") ||
    url.endsWith("/src/_platform.ts")
  ) return "hash";
  if (url.includes("/postgres@") || url.includes("/node_modules/postgres/")) {
    return "postgres.js";
  }
  if (url.includes("/src/driver/")) return "seam";
  if (url.endsWith("/mod.ts") || url.includes("/src/")) return "store";
  if (url.includes("/bench/")) return "callers";
  return "runtime";
}

/**
 * The samples between the first two idle pauses of at least `pauseMs`: the
 * measured window (the child pauses before and after it).
 */
function windowOf(profile: Profile, pauseMs: number): [number, number] {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const pauses: [number, number][] = [];
  let start = -1;
  let idle = 0;
  for (const [i, id] of profile.samples.entries()) {
    if (byId.get(id)!.callFrame.functionName === "(idle)") {
      if (start < 0) start = i;
      idle += profile.timeDeltas[i] ?? 0;
    } else {
      if (start >= 0 && idle >= pauseMs * 1000) pauses.push([start, i]);
      start = -1;
      idle = 0;
    }
  }
  if (start >= 0 && idle >= pauseMs * 1000) {
    pauses.push([start, profile.samples.length]);
  }
  if (pauses.length < 2) {
    throw new Error("the profile does not show the window's pauses");
  }
  return [pauses[0]![1], pauses[1]![0]];
}

/** What a profile says, per key. */
interface Breakdowns {
  /** Self time by where the code lives. */
  readonly self: Breakdown;
  /**
   * The runtime's time given to the nearest caller on the stack that is
   * not the runtime: what the store's, the driver's or the hash's calls
   * into Deno cost (GC and the event loop's own work stay apart).
   */
  readonly byCaller: Breakdown;
  /** Self time by frame. */
  readonly frames: Map<string, number>;
}

function emptyBreakdown(): Breakdown {
  return Object.fromEntries(
    [...BUCKETS, "main thread", "process CPU"].map((b) => [b, 0]),
  ) as Breakdown;
}

/** Self time per key by bucket, and by frame, over the window. */
function breakdown(
  profile: Profile,
  keys: number,
  cpuMicros: number,
): Breakdowns {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of (node as { children?: number[] }).children ?? []) {
      parent.set(child, node.id);
    }
  }
  /** The bucket of the nearest frame on the stack that is not runtime. */
  const caller = (id: number): Bucket => {
    for (let at: number | undefined = id; at !== undefined;) {
      const b = bucket(byId.get(at)!.callFrame);
      if (b !== "runtime") return b;
      at = parent.get(at);
    }
    return "runtime";
  };
  const [from, to] = windowOf(profile, PAUSE_MS * 0.8);
  const buckets = emptyBreakdown();
  const byCaller = emptyBreakdown();
  const frames = new Map<string, number>();
  for (let i = from; i < to; i++) {
    const id = profile.samples[i]!;
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === "(idle)") continue;
    // A sample's delta is the time since the one before it.
    const micros = (profile.timeDeltas[i + 1] ?? 0) / keys;
    buckets[bucket(frame)] += micros;
    buckets["main thread"] += micros;
    byCaller[caller(id)] += micros;
    byCaller["main thread"] += micros;
    const name = `${bucket(frame)}\t${frame.functionName || "(anonymous)"} ${
      frame.url.replace(/^.*\/(node_modules\/\.deno\/|src\/|bench\/)/, "$1")
    }:${(frame.lineNumber ?? 0) + 1}`;
    frames.set(name, (frames.get(name) ?? 0) + micros);
  }
  buckets["process CPU"] = cpuMicros;
  byCaller["process CPU"] = cpuMicros;
  return { self: buckets, byCaller, frames };
}

/** The pause around the window, milliseconds. */
const PAUSE_MS = 400;

// ---------------------------------------------------------------- child --

/** What a child runs: the store, or what it is profiled against. */
type Workload = "store" | "raw" | "floor";

/** What the child reports. */
interface ChildReport {
  readonly keys: number;
  readonly perSecond: number;
  readonly cpuMicros: number;
}

/**
 * The child: runs the workload for a warm-up, pauses, runs it for the
 * window, pauses, and prints the keys and CPU per key of the window.
 */
async function child(args: {
  major: 3 | 4;
  url: string;
  table: string;
  prefix: string;
  n: number;
  workload: Workload;
  callers: number;
  shape: [number, number];
  text: string;
  seconds: number;
}): Promise<void> {
  const sql = await openPool(major(args.major), args.url);
  try {
    const codes = codesOf(args.prefix, args.n);
    const load: Load = args.workload === "store"
      ? storeTakes(sql, args.table, codes, args.callers)
      : args.workload === "floor"
      ? hashedBatches(sql, args.text, codes, args.callers)
      : rawStatements(
        codes,
        args.shape[0],
        args.shape[1],
        (keys) => rawSend(sql, args.text, keys),
      );
    const warm = await timed(load, 1000, 0);
    await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
    const { run } = await timed(load, 0, args.seconds * 1000, warm.run.next);
    await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
    if (run.exhausted) throw new Error("the codes ran out");
    if (run.found !== run.sent) {
      throw new Error(`${run.found} of ${run.sent} keys found`);
    }
    const report: ChildReport = {
      keys: run.keys,
      perSecond: run.perSecond,
      cpuMicros: run.cpuMicros,
    };
    console.log(JSON.stringify(report));
  } finally {
    await sql.end({ timeout: 5 });
  }
}

// --------------------------------------------------------------- parent --

/**
 * Takes per statement the store sends at `callers` callers: a second's
 * takes on a pool whose `debug` hook counts the statements written (not
 * profiled: on 3.4, `debug` also captures a stack per query).
 */
async function statementsPerTake(
  m: Major,
  url: string,
  admin: Sql,
  table: string,
  callers: number,
): Promise<number> {
  const prefix = crypto.randomUUID();
  const n = callers === 1 ? 5_000 : 100_000;
  await fill(admin, table, prefix, n);
  let statements = 0;
  const sql = await openPool(m, url, { debug: () => statements++ });
  try {
    const codes = codesOf(prefix, n);
    const load = storeTakes(sql, table, codes, callers);
    const warm = await timed(load, 300, 0);
    statements = 0;
    const { run } = await timed(load, 0, 1000, warm.run.next);
    return run.sent / statements;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Profiles one workload in a child process. */
async function profileOne(
  m: 3 | 4,
  url: string,
  admin: Sql,
  table: string,
  workload: Workload,
  options: {
    callers: number;
    shape: [number, number];
    text: string;
    seconds: number;
  },
): Promise<Breakdowns & ChildReport> {
  // Enough codes for 60,000 keys a second over the warm-up and the window.
  const n = Math.ceil(60_000 * (options.seconds + 1.5)) /
    (options.callers === 1 ? 20 : 1);
  const prefix = crypto.randomUUID();
  await fill(admin, table, prefix, Math.ceil(n));
  const dir = await Deno.makeTempDir({ prefix: "attesto-prof-" });
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `--cpu-prof-dir=${dir}`,
        "--cpu-prof-interval=200",
        new URL(import.meta.url).pathname,
        "--child",
        JSON.stringify({
          major: m,
          url,
          table,
          prefix,
          n: Math.ceil(n),
          workload,
          ...options,
        }),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!output.success) {
      throw new Error(`the profiled process exited ${output.code}`);
    }
    const report = JSON.parse(
      new TextDecoder().decode(output.stdout).trim().split("\n").at(-1)!,
    ) as ChildReport;
    const [file] = [...Deno.readDirSync(dir)].map((e) => e.name);
    const profile = JSON.parse(
      await Deno.readTextFile(join(dir, file!)),
    ) as Profile;
    return { ...breakdown(profile, report.keys, report.cpuMicros), ...report };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "--child") {
    await child(JSON.parse(Deno.args[1]!));
    process.exit(0);
  }
  const flags = readFlags(Deno.args, {
    major: { type: "string" },
    callers: { type: "string" },
    shape: { type: "string" },
    seconds: { type: "string" },
    top: { type: "string" },
    against: { type: "string", default: "raw" },
  });
  const against = choiceFlag("against", flags.against, ["raw", "floor"])!;
  const only = choiceFlag("major", flags.major, ["3", "4"]);
  if (
    flags.shape !== undefined && !/^[1-9]\d*[x×][1-9]\d*$/.test(flags.shape)
  ) {
    refuse(
      `--shape takes statements × keys, such as 2x32, not ${
        JSON.stringify(flags.shape)
      }`,
    );
  }
  const callers = numberFlag("callers", flags.callers, 64, "count");
  const seconds = numberFlag("seconds", flags.seconds, 4, "seconds");
  const top = numberFlag("top", flags.top, 25, "count");
  const shape = (flags.shape ?? (callers === 1 ? "1x1" : "2x32")).split(/[x×]/)
    .map(Number) as [number, number];
  const majors = only ? [major(Number(only) as 3 | 4)] : MAJORS;
  await withBenchDatabase("profile", async ({ url, admin, table }) => {
    for (const m of majors) {
      const { text } = await takeStatement(m, url, admin, table);
      const options = {
        callers,
        shape,
        text,
        seconds,
      };
      const store = await profileOne(
        m.major,
        url,
        admin,
        table,
        "store",
        options,
      );
      // What the store is profiled against: the raw driver or the floor.
      const ref = await profileOne(
        m.major,
        url,
        admin,
        table,
        against,
        options,
      );
      const perStatement = await statementsPerTake(
        m,
        url,
        admin,
        table,
        callers,
      );
      const us = (x: number) => `${x.toFixed(1)} µs`;
      const n = (x: number) => Math.round(x).toLocaleString("en");
      console.log(
        `\npostgres.js ${m.version}: take at ${callers} caller${
          callers > 1 ? "s" : ""
        } (${n(store.perSecond)} takes/s, ${
          perStatement.toFixed(1)
        } takes per statement) against ${
          against === "raw"
            ? `the store's statement through the raw driver, ${
              shape.join("×")
            } (${n(ref.perSecond)} keys/s)`
            : `its floor at as many callers (${n(ref.perSecond)} takes/s)`
        }. Main thread, per take and per key; "by caller" gives ` +
          "the runtime's time to the code that called into it.\n",
      );
      console.log(
        `| | store, self | ${against}, self | store − ${against}, self | store, by caller | ${against}, by caller | store − ${against}, by caller |`,
      );
      console.log("| --- | --- | --- | --- | --- | --- | --- |");
      for (const key of Object.keys(store.self) as (keyof Breakdown)[]) {
        console.log(
          `| ${key} | ${us(store.self[key])} | ${us(ref.self[key])} | ${
            us(store.self[key] - ref.self[key])
          } | ${us(store.byCaller[key])} | ${us(ref.byCaller[key])} | ${
            us(store.byCaller[key] - ref.byCaller[key])
          } |`,
        );
      }
      console.log(
        `\nWhere the store spends more than ${
          against === "raw" ? "the raw driver" : "its floor"
        }, by frame (self time per take − per ${
          against === "raw" ? "key" : "take"
        }):\n`,
      );
      const frames = new Set([...store.frames.keys(), ...ref.frames.keys()]);
      const more = [...frames].map((name) =>
        [
          name,
          (store.frames.get(name) ?? 0) - (ref.frames.get(name) ?? 0),
        ] as const
      ).sort((a, b) => b[1] - a[1]).slice(0, top);
      for (const [name, micros] of more) {
        console.log(`${micros.toFixed(2).padStart(7)} µs  ${name}`);
      }
    }
  });
}
