/**
 * `deno task profile`: where a take's client CPU goes, at 64 concurrent
 * callers on a pool of 8, as V8's CPU profiler sees the main thread. Runs
 * the takes under `--cpu-prof-dir` in a child process, then sums each frame's
 * self time by where its code lives:
 *
 * - **store**: `mod.ts` and `src/` (the hash excluded);
 * - **hash**: `hashCode` and `@std/crypto` (here the local stand-in for
 *   `digestSync`, which is not the real package's WASM);
 * - **driver**: postgres.js;
 * - **runtime**: Deno's own JavaScript (`ext:`, `node:`), the event loop
 *   and native code;
 * - **GC**: V8's garbage collector.
 *
 * ```sh
 * DATABASE_URL=postgres://postgres@127.0.0.1:5432/test deno task profile
 * ```
 *
 * @module
 */

import { join } from "node:path";
import postgres from "../tools/postgres.ts";
import { createCodeStore, migrate, type NewCode } from "../mod.ts";
import { databaseFromEnv } from "../tools/embedded_postgres.ts";

const CALLERS = 64;
const TAKES = 60_000;

/** Microseconds of self time per take, by bucket. */
export type Breakdown = Record<
  "store" | "hash" | "driver" | "runtime" | "GC" | "total",
  number
>;

interface Profile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string };
  }[];
  samples: number[];
  timeDeltas: number[];
}

function bucket(
  { functionName, url }: { functionName: string; url: string },
): keyof Breakdown {
  if (functionName === "(garbage collector)") return "GC";
  if (
    url.includes("/std/crypto/") || url.includes("std__crypto") ||
    url.includes("@std/crypto") || functionName === "hashCode" ||
    url.endsWith("/src/hash_code.ts") || url.endsWith("/src/_platform.ts")
  ) return "hash";
  if (url.includes("/postgres@") || url.includes("/node_modules/postgres/")) {
    return "driver";
  }
  if (url.endsWith("/mod.ts") || url.includes("/src/")) return "store";
  return "runtime";
}

/** Sums a CPU profile's self time by bucket, per take. */
export function breakdown(profile: Profile, takes: number): Breakdown {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const sums: Breakdown = {
    store: 0,
    hash: 0,
    driver: 0,
    runtime: 0,
    GC: 0,
    total: 0,
  };
  for (const [i, id] of profile.samples.entries()) {
    const node = byId.get(id)!;
    const name = node.callFrame.functionName;
    if (name === "(idle)") continue;
    const micros = profile.timeDeltas[i] ?? 0;
    sums[bucket(node.callFrame)] += micros;
    sums.total += micros;
  }
  for (const key of Object.keys(sums) as (keyof Breakdown)[]) {
    sums[key] /= takes;
  }
  return sums;
}

/** Prints the 40 frames with the most self time (PROFILE_TOP=1). */
function top(profile: Profile): void {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<string, number>();
  for (const [i, id] of profile.samples.entries()) {
    const { functionName, url } = byId.get(id)!.callFrame;
    const key = `${bucket({ functionName, url })}\t${functionName} ${
      url.replace(/^.*\/(node_modules|src|ext:)/, "$1")
    }`;
    self.set(key, (self.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  for (
    const [key, micros] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 40)
  ) {
    console.log(`${(micros / TAKES).toFixed(2)} µs\t${key}`);
  }
}

/** A code of the run. */
function newCode(prefix: string, i: number): NewCode {
  return {
    code: `${prefix}-${i}`,
    expiresAt: Math.floor(Date.now() / 1000) + 600,
    data: {
      clientId: "s6BhdRkqt3",
      subject: `user-${i}`,
      redirectUri: "https://client.example.org/cb",
      scope: ["openid"],
      codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
      codeChallengeMethod: "S256",
    },
  };
}

/** The child: takes the codes the parent put, at 64 callers. */
async function child(url: string, table: string, prefix: string) {
  const sql = postgres(url, { max: 8, fetch_types: false, onnotice: () => {} });
  const store = createCodeStore(sql, { table });
  let next = 0;
  let won = 0;
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      while (next < TAKES) if (await store.take(`${prefix}-${next++}`)) won++;
    }),
  );
  await sql.end({ timeout: 5 });
  if (won !== TAKES) throw new Error(`${won} of ${TAKES} takes won`);
}

/**
 * Profiles `TAKES` takes at 64 callers against `url` (the codes put by
 * this process, the takes profiled in a child) and returns the breakdown
 * per take.
 */
export async function profileTakes(url: string): Promise<Breakdown> {
  const admin = postgres(url, {
    max: 8,
    fetch_types: false,
    onnotice: () => {},
  });
  const table = `profile_${crypto.randomUUID().slice(0, 8)}`;
  const prefix = crypto.randomUUID();
  const dir = await Deno.makeTempDir({ prefix: "attesto-prof-" });
  try {
    await migrate(admin, { table });
    const store = createCodeStore(admin, { table });
    for (let i = 0; i < TAKES; i += 1000) {
      await Promise.all(
        Array.from(
          { length: 1000 },
          (_, j) => store.put(newCode(prefix, i + j)),
        ),
      );
    }
    const { code } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `--cpu-prof-dir=${dir}`,
        new URL(import.meta.url).pathname,
        "--child",
        url,
        table,
        prefix,
      ],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn().status;
    if (code !== 0) throw new Error(`the profiled process exited ${code}`);
    const files = [...Deno.readDirSync(dir)].map((e) => e.name);
    const profile = JSON.parse(
      await Deno.readTextFile(join(dir, files[0]!)),
    ) as Profile;
    if (Deno.env.get("PROFILE_TOP")) top(profile);
    return breakdown(profile, TAKES);
  } finally {
    await admin.unsafe(`drop table if exists ${table}, ${table}_spent`);
    await admin.end({ timeout: 5 });
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "--child") {
    await child(Deno.args[1]!, Deno.args[2]!, Deno.args[3]!);
  } else {
    const { url, server } = await databaseFromEnv();
    try {
      const b = await profileTakes(url);
      console.log(
        Object.entries(b).map(([k, v]) => `${k} ${v.toFixed(1)} µs`).join(
          ", ",
        ),
      );
    } finally {
      await server?.destroy();
    }
  }
}
