import { assertEquals } from "@std/assert";
import { databaseUrl, testDatabase } from "./support/database.ts";
import { runLoad } from "../tools/load/load.ts";

Deno.test("10,000 codes, each raced by 4 callers in 2 processes over 4 pools: 10,000 winners, nothing left", async () => {
  await using t = await testDatabase();
  const report = await runLoad({
    url: databaseUrl(),
    table: t.table,
    codes: 10_000,
    processes: 2,
    poolsPerProcess: 2,
    racersPerProcess: 2,
  });
  console.log(
    `load: ${report.codes} codes, ${report.takes} takes in ${
      report.takeSeconds.toFixed(1)
    } s (${Math.round(report.takesPerSecond)}/s), ${report.winners} winners, ` +
      `${report.doubleRedemptions} double redemptions`,
  );
  assertEquals(report.stored, 10_000);
  assertEquals(report.errors, {});
  assertEquals(report.winners, 10_000);
  assertEquals(report.doubleRedemptions, 0);
  assertEquals(report.unhandled, 0, "no unhandled rejection in any worker");
  assertEquals(report.unredeemed, 0);
  assertEquals(report.mismatches, 0, "each grant equals what was put");
  assertEquals(report.nulls, 30_000);
  assertEquals(report.rowsLeft, 0);
});
