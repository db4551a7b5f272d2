/**
 * `deno task bench --quick`: the benchmark runs end to end on both
 * postgres.js majors and reports the three ratios of #26. A smoke test: it
 * asserts what was measured, never a speed.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import { MAJORS, POSTGRES_MAJOR } from "../tools/postgres.ts";
import { databaseUrl } from "./support/database.ts";

Deno.test({
  name:
    "`deno task bench --quick` measures the store and the raw driver on postgres.js 3.4 and 4.x and writes the three ratios",
  // The bench imports both majors itself: the suite's 3.4 pass would only
  // run it again.
  ignore: POSTGRES_MAJOR === 3,
  async fn() {
    const temp = await Deno.makeTempDir({ prefix: "attesto-bench-" });
    // A folder that does not exist yet: the bench makes it.
    const out = `${temp}/results`;
    try {
      const { success, stderr } = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../bench/bench.ts", import.meta.url).pathname,
          "--quick",
          "--out",
          out,
        ],
        env: { DATABASE_URL: databaseUrl() },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).output();
      assert(success, new TextDecoder().decode(stderr));
      const results = JSON.parse(
        await Deno.readTextFile(`${out}/results.json`),
      );
      assertEquals(
        results.majors.map((m: { summary: { version: string } }) =>
          m.summary.version
        ),
        MAJORS.map((m) => m.version),
      );
      assertMatch(results.takeStatement, /^\s*with spent as \(\s*delete from/i);
      for (const { summary, rounds } of results.majors) {
        assertEquals(rounds.length, 1);
        for (const ratio of ["throughput", "cpu", "lone"]) {
          const r = summary.ratios[ratio];
          assert(
            r.ratio > 0 && Number.isFinite(r.ratio),
            `${ratio}: ${r.ratio}`,
          );
          assertEquals(typeof r.met, "boolean");
        }
        // The floor: the hash and the callers without the store.
        for (
          const ratio of ["throughput", "cpu", "storeThroughput", "storeCpu"]
        ) {
          const r = summary.floor[ratio];
          assert(r > 0 && Number.isFinite(r), `floor ${ratio}: ${r}`);
        }
        assertEquals(Object.keys(summary.shapes), [
          "1×64",
          "2×32",
          "4×16",
          "8×8",
        ]);
      }
      const page = await Deno.readTextFile(`${out}/README.md`);
      assertMatch(page, /store ÷ raw own statement\s*\|\s*≥ 0\.8×/);
      assertMatch(page, /store ÷ floor: throughput, CPU/);
    } finally {
      await Deno.remove(temp, { recursive: true });
    }
  },
});

/** Runs `script` with `flags`, reaching no database; its code and stderr. */
async function refused(
  script: string,
  flags: string[],
): Promise<{ code: number; stderr: string }> {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(`../bench/${script}`, import.meta.url).pathname,
      ...flags,
    ],
    // Nothing is measured: no database is reached.
    env: { DATABASE_URL: "postgres://nobody@127.0.0.1:1/none" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code, stderr: new TextDecoder().decode(stderr) };
}

Deno.test("`deno task bench` refuses a count or a time that is not one, or a flag it does not know, before it measures", async () => {
  const temp = await Deno.makeTempDir({ prefix: "attesto-bench-" });
  try {
    for (
      const [flag, wanted] of [
        ["--rounds=0", /--rounds takes a whole number above 0, not "0"/],
        ["--slices=1.5", /--slices takes a whole number above 0/],
        ["--seconds=soon", /--seconds takes a number of seconds above 0/],
        ["--warmup=-1", /--warmup takes a number of seconds, 0 or more/],
        ["--round=3", /'--round'/],
      ] as const
    ) {
      const { code, stderr } = await refused("bench.ts", [
        flag,
        "--out",
        `${temp}/results`,
      ]);
      assertEquals(code, 2, flag);
      assertMatch(stderr, wanted);
      // One line, no stack trace.
      assertEquals(stderr.trim().split("\n").length, 1, stderr);
    }
    // Refused before anything was written.
    assertEquals([...Deno.readDirSync(temp)], []);
  } finally {
    await Deno.remove(temp, { recursive: true });
  }
});

Deno.test("`deno task profile` refuses a flag it cannot use with one line, before it measures", async () => {
  for (
    const [flag, wanted] of [
      ["--against=bare", /--against takes raw or floor, not "bare"/],
      ["--major=5", /--major takes 3 or 4, not "5"/],
      ["--shape=2by32", /--shape takes statements × keys, such as 2x32/],
      ["--callers=many", /--callers takes a whole number above 0/],
      ["--shapes=2x32", /'--shapes'/],
      ["--top", /'--top <value>'/],
    ] as const
  ) {
    const { code, stderr } = await refused("profile.ts", [flag]);
    assertEquals(code, 2, flag);
    assertMatch(stderr, wanted);
    assertEquals(stderr.trim().split("\n").length, 1, stderr);
  }
});
