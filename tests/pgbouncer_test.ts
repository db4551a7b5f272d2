/**
 * Through PgBouncer in transaction pooling mode. postgres.js needs
 * `prepare: false` there: named prepared statements live on a server
 * connection, and the next transaction may run on another one. The tests
 * are skipped where the `pgbouncer` binary is not installed (CI installs it).
 */

import { assertEquals } from "@std/assert";
import postgres from "postgres";
import { createCodeStore, migrate } from "../mod.ts";
import {
  databaseUrl,
  grant,
  randomCode,
  testDatabase,
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
