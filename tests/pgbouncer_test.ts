/**
 * Through PgBouncer in transaction pooling mode. postgres.js needs
 * `prepare: false` there: named prepared statements live on a server
 * connection, and the next transaction may run on another one. The tests
 * are skipped where the `pgbouncer` binary is not installed (CI installs it).
 */

import { assert, assertEquals, assertInstanceOf } from "@std/assert";
import postgres, { POSTGRES_MAJOR } from "../tools/postgres.ts";
import {
  createCodeStore,
  hashCode,
  migrate,
  OperationTimeoutError,
} from "../mod.ts";
import {
  databaseUrl,
  grant,
  lockRow,
  randomCode,
  testDatabase,
  until,
  waitingOnLock,
} from "./support/database.ts";
import { runLoad } from "../tools/load/load.ts";
import { pgbouncerPath, startPgBouncer } from "./support/pgbouncer.ts";

const ignore = pgbouncerPath === undefined;
if (ignore) console.warn("pgbouncer is not installed: PgBouncer tests skipped");
const THROUGH_PGBOUNCER = { prepare: false, fetch_types: false } as const;

Deno.test({
  name:
    "through PgBouncer (transaction mode): migrate, put, take, and 200 racing takes over 4 pools give one winner",
  ignore,
  async fn() {
    await using t = await testDatabase();
    await using bouncer = await startPgBouncer(databaseUrl());
    const pools = Array.from(
      { length: 4 },
      () =>
        postgres(bouncer.url, {
          ...THROUGH_PGBOUNCER,
          max: 10,
          onnotice: () => {},
        }),
    );
    try {
      const table = `${t.schema}.bounced`;
      await migrate(pools[0]!, { table });
      await migrate(pools[1]!, { table });
      const stores = pools.map((sql) => createCodeStore(sql, { table }));
      for (let round = 0; round < 10; round++) {
        const code = randomCode();
        const data = grant({ subject: `user-${round}` });
        await stores[round % 4]!.put({ code, data, expiresAt: 1_900_000_000 });
        const results = await Promise.all(
          Array.from({ length: 200 }, (_, i) => stores[i % 4]!.take(code)),
        );
        const winners = results.filter((entry) => entry !== null);
        assertEquals(winners.length, 1);
        assertEquals(winners[0]!.data.subject, `user-${round}`);
      }
    } finally {
      await Promise.all(pools.map((sql) => sql.end({ timeout: 5 })));
    }
  },
});

Deno.test({
  name:
    "through PgBouncer, racing takes in 2 OS processes redeem every code exactly once",
  ignore,
  async fn() {
    await using t = await testDatabase();
    await using bouncer = await startPgBouncer(databaseUrl());
    const report = await runLoad({
      url: bouncer.url,
      poolOptions: THROUGH_PGBOUNCER,
      table: t.table,
      codes: 1000,
      processes: 2,
      poolsPerProcess: 2,
      racersPerProcess: 2,
    });
    assertEquals(report.errors, {});
    assertEquals(report.winners, 1000);
    assertEquals(report.doubleRedemptions, 0);
    assertEquals(report.unhandled, 0, "no unhandled rejection in any worker");
    assertEquals(report.mismatches, 0);
    assertEquals(report.rowsLeft, 0);
  },
});

/** The options a pool needs through PgBouncer in `mode`. */
function throughPgBouncer(mode: "session" | "transaction") {
  // Named prepared statements need a session of their own.
  return { prepare: mode === "session", fetch_types: false } as const;
}

for (const mode of ["transaction", "session"] as const) {
  Deno.test({
    name:
      `through PgBouncer (${mode} mode), a \`take()\` that times out on a locked row is cancelled: nothing waits, the pool serves, the code is taken once afterwards`,
    ignore,
    async fn() {
      await using t = await testDatabase();
      await using bouncer = await startPgBouncer(databaseUrl(), mode);
      const sql = postgres(bouncer.url, {
        ...throughPgBouncer(mode),
        max: 4,
        onnotice: () => {},
      });
      try {
        const store = createCodeStore(sql, { table: t.table, timeoutMs: 300 });
        // Warm: in session mode, the store learns its connections.
        for (let i = 0; i < 4; i++) {
          const code = randomCode();
          await store.put({ code, data: grant(), expiresAt: 1_900_000_000 });
          assert(await store.take(code));
        }
        for (let round = 0; round < 5; round++) {
          const code = randomCode();
          const data = grant({ subject: `user-${round}` });
          await store.put({ code, data, expiresAt: 1_900_000_000 });
          await using lock = await lockRow(t, code);
          const error = await store.take(code).catch((error) => error);
          assertInstanceOf(error, OperationTimeoutError);
          // The cancel reached the statement through PgBouncer: nothing of
          // the store waits on the lock any more.
          await until(
            async () => await waitingOnLock(t) === 0,
            10_000,
            `round ${round}: the timed-out take stopped waiting on the lock`,
            () => waitingOnLock(t),
          );
          // The pool still serves while the lock is held.
          const other = randomCode();
          await store.put({ code: other, data, expiresAt: 1_900_000_000 });
          assertEquals(
            (await store.take(other))?.data.subject,
            `user-${round}`,
          );
          await lock.release();
          // The timed-out take spent nothing: the code is taken once.
          const takes = await Promise.all(
            Array.from({ length: 8 }, () => store.take(code)),
          );
          assertEquals(
            takes.filter((entry) => entry !== null).length,
            1,
            `round ${round}: the code was intact and is taken once`,
          );
        }
        assertEquals(
          bouncer.log().match(/bad client state|FATAL/g),
          null,
          "PgBouncer did not fail",
        );
      } finally {
        await sql.end({ timeout: 5 });
      }
    },
  });
}

Deno.test({
  name:
    "(control) through PgBouncer, postgres.js 4's own `query.cancel()` is dropped or crashes PgBouncer",
  // 3.4's writes the request and waits for the server's answer.
  ignore: ignore || POSTGRES_MAJOR !== 4,
  async fn() {
    // Why the store sends its own cancel request: the driver's ends its
    // socket with the request; PgBouncer 1.18 can read the end first and
    // drop the request ("client unexpected eof"), the statement waiting
    // on, or forward it and then crash (\`disconnect_client(): bad client
    // state\`, a PgBouncer bug). Runs until it sees one or the other,
    // bounded in time. When this fails, the driver's cancel works through
    // PgBouncer.
    await using t = await testDatabase();
    await using bouncer = await startPgBouncer(databaseUrl(), "session");
    const sql = postgres(bouncer.url, {
      ...throughPgBouncer("session"),
      max: 1,
      onnotice: () => {},
    });
    try {
      const store = createCodeStore(t.sql, { table: t.table });
      const giveUp = performance.now() + 30_000;
      const seen: string[] = [];
      while (performance.now() < giveUp) {
        const code = randomCode();
        await store.put({ code, data: grant(), expiresAt: 1_900_000_000 });
        await using lock = await lockRow(t, code);
        const query = sql.unsafe(
          `delete from ${t.table} where code_hash = $1`,
          [hashCode(code)],
        ).execute();
        const outcome = query.then(() => "deleted", (error) => error.code);
        await until(
          async () => await waitingOnLock(t) === 1,
          10_000,
          "the delete waits on the lock",
          async () => [
            await waitingOnLock(t),
            await Promise.race([outcome, "pending"]),
          ],
        );
        await (query.cancel() as unknown as Promise<void> | null);
        // Cancelled, the delete ends with 57014 at once.
        const early = await Promise.race([
          outcome,
          new Promise<string>((resolve) => setTimeout(resolve, 500, "waits")),
        ]);
        if (early === "waits") assertEquals(await waitingOnLock(t), 1);
        await lock.release();
        await outcome;
        // PgBouncer crashes, if it does, just after it forwarded the request.
        await new Promise((resolve) => setTimeout(resolve, 200));
        const crashed = bouncer.log().includes("bad client state");
        seen.push(crashed ? "crashed" : early);
        if (crashed || early === "waits") break;
      }
      console.log(`the driver's cancel through PgBouncer: ${seen.join(", ")}`);
      assert(
        ["waits", "crashed"].includes(seen.at(-1)!),
        `every cancel went through: ${seen.join(", ")}`,
      );
    } finally {
      await sql.end({ timeout: 1 });
    }
  },
});
