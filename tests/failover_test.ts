/**
 * Exactly once through a real automated failover: a pg_auto_failover
 * formation (a monitor and two PostgreSQL nodes with synchronous
 * replication), its primary killed in the middle of a multi-process race.
 * And the limits: asynchronous replication does lose redemptions (the
 * control), and a standby that stops acknowledging makes commits wait.
 *
 * Skipped, with a warning, where pg_auto_failover is not installed (CI
 * installs it).
 */

import {
  assert,
  assertEquals,
  assertGreater,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import postgres from "../tools/postgres.ts";
import {
  type CodeStore,
  createCodeStore,
  DatabaseUnavailableError,
  hashCode,
  migrate,
  OperationTimeoutError,
} from "../mod.ts";
import { cli } from "./support/cli.ts";
import { grant, type PoolOptions, randomCode } from "./support/database.ts";
import { HaCluster, type HaNode, haSupport } from "./support/ha_cluster.ts";
import { LoadRun, type RaceResult } from "../tools/load/load.ts";
import { newCodeFor } from "../tools/load/load_plan.ts";

const ignore = haSupport === undefined;
if (ignore) {
  console.warn(
    "pg_auto_failover is not installed: failover tests skipped " +
      "(apt-get install pg-auto-failover-cli postgresql-15-auto-failover)",
  );
}

const TABLE = "ha_codes";
const IN_AN_HOUR = Math.floor(Date.now() / 1000) + 3600;
/** The pool settings the README recommends. */
const POOL: PoolOptions = {
  fetch_types: false,
  backoff: false,
  connect_timeout: 2,
  onnotice: () => {},
};

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function issue(store: CodeStore, n: number): Promise<string[]> {
  const codes = Array.from({ length: n }, () => randomCode());
  await Promise.all(
    codes.map((code) =>
      store.put({ code, data: grant(), expiresAt: IN_AN_HOUR })
    ),
  );
  return codes;
}

/** Waits until `node` is a primary that accepts writes. */
async function writable(cluster: HaCluster, node: HaNode, timeout = 30_000) {
  const deadline = performance.now() + timeout;
  for (;;) {
    try {
      const ok = await cluster.on(node, async (sql) => {
        const [row] = await sql<[{ ro: string; standby: boolean }]>`
          select current_setting('transaction_read_only') as ro,
            pg_is_in_recovery() as standby
        `;
        return row.ro === "off" && !row.standby;
      });
      if (ok) return;
    } catch {
      // Not up yet.
    }
    if (performance.now() > deadline) {
      throw new Error(`${node.name} did not become writable`);
    }
    await delay(100);
  }
}

/**
 * Calls `take()` of a never-issued code every 50 ms from now until one
 * succeeds (it needs a primary that accepts writes, as any take does), and
 * summarises what the calls saw: runs of the same outcome, when it was first
 * and last seen (ms after `since`), and the longest call.
 */
function probe(url: string, since: () => number) {
  const sql = postgres(url, { ...POOL, max: 2 });
  const store = createCodeStore(sql, { table: TABLE, timeoutMs: 10_000 });
  const runs: {
    outcome: string;
    first: number;
    last: number;
    calls: number;
    longest: number;
  }[] = [];
  return (async () => {
    for (;;) {
      const start = performance.now();
      let outcome = "ok";
      try {
        await store.take(randomCode());
      } catch (error) {
        const e = error as { reason?: unknown; code?: unknown };
        outcome = String(e.reason ?? e.code ?? error);
      }
      const end = performance.now();
      const took = Math.round(end - start);
      const at = Math.round(end - since());
      const run = runs.at(-1);
      if (run?.outcome === outcome) {
        run.last = at;
        run.calls++;
        run.longest = Math.max(run.longest, took);
      } else {
        runs.push({ outcome, first: at, last: at, calls: 1, longest: took });
      }
      if (outcome === "ok" && runs.length > 1) break;
      await delay(50);
    }
    await sql.end({ timeout: 1 });
    return runs;
  })();
}

/** How many of `codes` still have their row on `node`. */
function stored(cluster: HaCluster, node: HaNode, hashes: string[]) {
  return cluster.on(node, async (sql) => {
    const rows = await sql<{ code_hash: string }[]>`
      select code_hash from ${sql(TABLE)}
      where code_hash = any(array(select jsonb_array_elements_text(${
      sql.json(hashes)
    })))
    `;
    return new Set(rows.map((r) => r.code_hash));
  });
}

Deno.test({
  name:
    "a pg_auto_failover cluster (monitor, 2 nodes, synchronous replication)",
  ignore,
  async fn(t) {
    const started = performance.now();
    await using cluster = await HaCluster.create();
    console.log(
      `failover: cluster up in ${Math.round(performance.now() - started)} ms`,
    );
    const [node1, node2] = cluster.nodes;
    await cluster.on(node1, (sql) => migrate(sql, { table: TABLE }));

    await t.step(
      "`cli replication` on the primary: a synchronous standby, exit 0",
      async () => {
        const run = await cli(["replication", "--json"], {
          DATABASE_URL: node1.url,
        });
        assertEquals(run.code, 0, run.err);
        const report = JSON.parse(run.out);
        assertEquals(report.risk, "none");
        assertEquals(report.standbys.length, 1);
        assertEquals(report.standbys[0].syncState, "quorum");
      },
    );

    await t.step(
      "postgres.js's target_session_attrs=read-write connects to a hot standby; primary does not",
      async () => {
        // The standby first in the host list, as after a failover.
        const url = (attrs: string) =>
          `postgres://postgres@127.0.0.1:${node2.port},127.0.0.1:${node1.port}` +
          `/postgres?target_session_attrs=${attrs}`;
        for (
          const [attrs, expected] of [
            // Both majors decide read-write from
            // default_transaction_read_only, which is off on a hot standby.
            ["read-write", true],
            ["primary", false],
          ] as const
        ) {
          const sql = postgres(url(attrs), { ...POOL, max: 1 });
          try {
            const [{ standby }] = await sql<[{ standby: boolean }]>`
            select pg_is_in_recovery() as standby
          `;
            assertEquals(standby, expected, attrs);
            if (expected) {
              // There, every put fails: a read-only transaction (25006).
              const store = createCodeStore(sql, { table: TABLE });
              const error = await assertRejects(() => issue(store, 1));
              assertInstanceOf(error, DatabaseUnavailableError);
              assertEquals(error.reason, "25006");
            }
          } finally {
            await sql.end({ timeout: 1 });
          }
        }
      },
    );

    await t.step(
      "standby stops acknowledging: commits wait, calls time out (sent), a replay is answered at once, nothing is lost",
      async () => {
        const notices: string[] = [];
        const sql = postgres(cluster.url, {
          ...POOL,
          max: 4,
          onnotice: (notice) => notices.push(String(notice.message)),
        });
        try {
          const store = createCodeStore(sql, { table: TABLE, timeoutMs: 1000 });
          const [code, other] = await issue(store, 2);
          await cluster.holdReplication(node2, true);
          try {
            const started = performance.now();
            const error = await assertRejects(
              () => store.take(code!),
              OperationTimeoutError,
            );
            assert(error.sent, "the take had reached the server");
            const waited = performance.now() - started;
            // The store cancelled the synchronous-replication wait: PostgreSQL
            // committed locally and only warned. The code is spent on the
            // primary, and was returned to no one.
            await delay(200);
            assert(
              notices.some((n) =>
                n.includes("canceling wait for synchronous replication")
              ),
              `the cancel ended the wait: ${JSON.stringify(notices)}`,
            );
            assertEquals(
              (await stored(cluster, node1, [hashCode(code!)])).size,
              0,
            );
            // A replay deletes nothing, so writes nothing and waits for
            // nothing: null at once.
            assertEquals(await store.take(code!), null);
            // A put waits like the take did.
            await assertRejects(() => issue(store, 1), OperationTimeoutError);
            // Cancelled by anyone else (an operator's pg_cancel_backend), the
            // wait ends the same way, but the take returns the entry: its
            // commit is on the primary only.
            const slow = createCodeStore(sql, {
              table: TABLE,
              timeoutMs: 10_000,
            });
            const taking = slow.take(other!);
            let cancelled = 0;
            for (let i = 0; i < 50 && cancelled === 0; i++) {
              await delay(50);
              cancelled = await cluster.on(node1, async (admin) => {
                const [{ n }] = await admin<[{ n: number }]>`
                select count(*) filter (where pg_cancel_backend(pid))::int as n
                from pg_stat_activity
                where wait_event = 'SyncRep' and query ilike '%delete from%'
              `;
                return n;
              });
            }
            assertEquals(cancelled, 1);
            const entry = await taking;
            assert(entry !== null, "the entry came back, committed locally");
            console.log(
              `failover: a stalled standby held a take ${
                Math.round(waited)
              } ms ` +
                `(the store's timeout: 1000 ms); ${notices.length} warnings`,
            );
          } finally {
            await cluster.holdReplication(node2, false);
          }
          // Replication resumes: the standby has the deletes too.
          const deadline = performance.now() + 10_000;
          while (
            (await stored(cluster, node2, [hashCode(code!), hashCode(other!)]))
              .size > 0
          ) {
            assert(performance.now() < deadline, "the standby caught up");
            await delay(100);
          }
          const [fresh] = await issue(store, 1);
          assert(await store.take(fresh!));
        } finally {
          await sql.end({ timeout: 1 });
        }
      },
    );

    let primary = node1;
    await t.step(
      "primary killed mid-race (2 processes x 2 pools): 0 double redemptions, 0 wrong grants, 0 unhandled; every code won once, still stored, or spent in a failed call",
      async () => {
        const codes = 3000;
        const round = 500;
        await using run = await LoadRun.start({
          url: cluster.url,
          table: TABLE,
          codes,
          processes: 2,
          poolsPerProcess: 2,
          connections: 4,
          racersPerProcess: 4,
          poolOptions: POOL,
          storeOptions: { timeoutMs: 3000 },
        });
        const { stored: put } = await run.put();
        assertEquals(put, codes);

        const wins = new Map<number, number>();
        const errored = new Set<number>();
        const errors: Record<string, number> = {};
        let mismatches = 0;
        let unhandled = 0;
        const tally = (result: RaceResult) => {
          for (const [i, n] of result.wins) wins.set(i, (wins.get(i) ?? 0) + n);
          for (const i of result.errored) errored.add(i);
          for (const [k, n] of Object.entries(result.errors)) {
            errors[k] = (errors[k] ?? 0) + n;
          }
          mismatches += result.mismatches;
          unhandled += result.unhandled;
        };
        let killed: Promise<void> | undefined;
        let killedAt = 0;
        let probed: ReturnType<typeof probe> | undefined;
        const raceStarted = performance.now();
        for (let from = 0; from < codes; from += round) {
          // The rounds after the one the kill lands in race the failover,
          // whatever the machine's speed: they start once the kill is done.
          if (from > round) await killed;
          if (from === round) {
            // Mid-round: the kill lands while the next round races.
            killed = delay(30).then(() => {
              killedAt = performance.now();
              probed = probe(cluster.url, () => killedAt);
              return cluster.kill(primary);
            });
          }
          tally(await run.race({ from, to: Math.min(from + round, codes) }));
        }
        await killed;
        const raceSeconds = (performance.now() - raceStarted) / 1000;
        primary = cluster.other(primary);
        await cluster.waitFor({ [primary.name]: ["wait_primary", "primary"] });
        await writable(cluster, primary);
        const failoverMs = Math.round(performance.now() - killedAt);
        const seen = await probed!;
        console.log(
          "failover: what a take saw after the kill (ms): " +
            seen.map((r) =>
              `${r.outcome} from ${r.first} to ${r.last} (${r.calls} calls, ` +
              `the longest ${r.longest})`
            ).join("; "),
        );

        // Codes nobody won: still stored on the new primary (redeemable
        // once, below), or spent by a call that failed.
        const lost = Array.from({ length: codes }, (_, i) => i).filter((i) =>
          !wins.has(i)
        );
        const hashes = lost.map((i) => hashCode(newCodeFor(run.seed, i).code));
        const still = await stored(cluster, primary, hashes);
        const redeemable = lost.filter((_, k) => still.has(hashes[k]!));
        const spentInFailedCalls = lost.filter((_, k) =>
          !still.has(hashes[k]!)
        );
        for (const i of spentInFailedCalls) {
          assert(errored.has(i), `code ${i} vanished without a failed call`);
        }
        // The same stores, without a restart, redeem each exactly once.
        let pending = redeemable;
        const retakeWins = new Map<number, number>();
        const retakeErrors: Record<string, number> = {};
        for (let attempt = 0; pending.length > 0; attempt++) {
          assert(attempt < 5, `codes still not redeemed: ${pending.length}`);
          const result = await run.race(pending);
          mismatches += result.mismatches;
          unhandled += result.unhandled;
          for (const [k, n] of Object.entries(result.errors)) {
            retakeErrors[k] = (retakeErrors[k] ?? 0) + n;
          }
          for (const [i, n] of result.wins) {
            retakeWins.set(i, (retakeWins.get(i) ?? 0) + n);
          }
          pending = pending.filter((i) => !result.wins.has(i));
          for (const i of pending) {
            assert(
              result.errored.has(i),
              `code ${i} is stored, yet no take won it`,
            );
          }
          // A failed call may have spent its code; the others go again.
          const left = await stored(
            cluster,
            primary,
            pending.map((i) => hashCode(newCodeFor(run.seed, i).code)),
          );
          for (const i of pending) {
            if (!left.has(hashCode(newCodeFor(run.seed, i).code))) {
              spentInFailedCalls.push(i);
            }
          }
          pending = pending.filter((i) => !spentInFailedCalls.includes(i));
          if (pending.length > 0) await delay(500);
        }
        for (const [i, n] of retakeWins) {
          assertEquals(
            n,
            1,
            `code ${i} redeemed ${n} times after the failover`,
          );
          wins.set(i, (wins.get(i) ?? 0) + n);
        }
        const doubles = [...wins.values()].filter((n) => n > 1).length;
        const backends = await run.poolBackends();
        console.log(
          `failover: ${codes} codes raced by 8 callers in 2 processes; primary ` +
            `killed, new primary writable ${failoverMs} ms later; race ` +
            `${raceSeconds.toFixed(1)} s; ${[...wins.values()].length} won ` +
            `(${retakeWins.size} of them after the failover, still stored), ` +
            `${spentInFailedCalls.length} spent in failed calls, ${doubles} ` +
            `double redemptions, ${mismatches} wrong grants, ${unhandled} ` +
            `unhandled; errors ${JSON.stringify(errors)}, then ` +
            `${JSON.stringify(retakeErrors)}; pool connections ` +
            `${JSON.stringify(backends)}`,
        );
        assertEquals(doubles, 0);
        assertEquals(mismatches, 0);
        assertEquals(unhandled, 0);
        assertEquals(wins.size + spentInFailedCalls.length, codes);
        assertGreater(Object.keys(errors).length, 0, "the failover was felt");
        assertEquals(
          backends,
          [4, 4, 4, 4],
          "every pool kept every connection",
        );
      },
    );

    await t.step(
      "the control: with asynchronous replication, codes redeemed on the old primary are redeemed again after a failover",
      async () => {
        const old = cluster.other(primary);
        cluster.rejoin(old);
        await cluster.waitFor({
          [old.name]: "secondary",
          [primary.name]: "primary",
        }, 60_000);
        await cluster.setReplicationQuorum(old, false);
        await cluster.on(primary, async (sql) => {
          for (let i = 0; i < 100; i++) {
            const [{ names }] = await sql<[{ names: string }]>`
            select current_setting('synchronous_standby_names') as names
          `;
            if (names === "") return;
            await delay(100);
          }
          throw new Error("synchronous_standby_names was not cleared");
        });
        const report = await cli(["replication"], {
          DATABASE_URL: primary.url,
        });
        assertEquals(report.code, 3, report.err);
        assertStringIncludes(report.out, "a failover can lose redemptions");
        const sql = postgres(cluster.url, { ...POOL, max: 4 });
        try {
          const store = createCodeStore(sql, { table: TABLE, timeoutMs: 5000 });
          const codes = await issue(store, 50);
          // The standby has them, then stops receiving.
          const hashes = codes.map((code) => hashCode(code));
          for (let i = 0; (await stored(cluster, old, hashes)).size < 50; i++) {
            assert(i < 100, "the standby received the codes");
            await delay(100);
          }
          await cluster.holdReplication(primary, true);
          const first = await Promise.all(
            codes.map((code) => store.take(code)),
          );
          assertEquals(first.filter((e) => e !== null).length, 50);
          await cluster.kill(primary);
          await cluster.waitFor({ [old.name]: ["wait_primary", "primary"] });
          await writable(cluster, old);
          // A take that fails (the first statement on a reconnected
          // connection can fail with the old server's error: postgres.js
          // #1223) goes again, a few times, until it is answered.
          const again: (unknown | null)[] = codes.map(() => null);
          let unanswered = codes.map((_, i) => i);
          for (let round = 0; round < 5 && unanswered.length > 0; round++) {
            if (round > 0) await delay(500);
            const failed: number[] = [];
            await Promise.all(unanswered.map(async (i) => {
              try {
                again[i] = await store.take(codes[i]!);
              } catch (error) {
                assertInstanceOf(error, Error);
                failed.push(i);
              }
            }));
            unanswered = failed;
          }
          const twice = again.filter((e) => e !== null).length;
          console.log(
            `failover: asynchronous replication: ${twice} of 50 codes ` +
              `redeemed again after the failover`,
          );
          assertGreater(twice, 0, "asynchronous replication loses redemptions");
        } finally {
          await sql.end({ timeout: 1 });
        }
      },
    );
  },
});
