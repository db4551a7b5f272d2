import { assertEquals, assertGreater, assertInstanceOf } from "@std/assert";
import {
  type CodeEntry,
  type CodeStore,
  createCodeStore,
  DuplicateCodeError,
  hashCode,
} from "../mod.ts";
import {
  connect,
  databaseUrl,
  end,
  grant,
  IN_A_MINUTE,
  type PoolOptions,
  randomCode,
  storedCodes,
  testDatabase,
} from "./support/database.ts";
import { runLoad } from "../tools/load/load.ts";

/** Opens `n` independent pools with every connection already open. */
async function nodes(n: number, max = 10, options: PoolOptions = {}) {
  const pools = Array.from({ length: n }, () => connect({ max, ...options }));
  await Promise.all(
    pools.flatMap((sql) => Array.from({ length: max }, () => sql`select 1`)),
  );
  return Object.assign(pools, {
    async [Symbol.asyncDispose]() {
      await Promise.all(pools.map(end));
    },
  });
}

/** Fires `racers` concurrent takes of `code`, spread over the stores. */
async function race(stores: CodeStore[], code: string, racers: number) {
  const results = await Promise.all(
    Array.from(
      { length: racers },
      (_, i) => stores[i % stores.length]!.take(code),
    ),
  );
  return results.filter((entry): entry is CodeEntry => entry !== null);
}

for (const coalesce of [true, false]) {
  Deno.test(`of 200 concurrent \`take()\`s over 4 pools, exactly one gets the entry (coalesce: ${coalesce})`, async () => {
    await using t = await testDatabase();
    await using pools = await nodes(4);
    const stores = pools.map((sql) =>
      createCodeStore(sql, { table: t.table, coalesce })
    );
    const issued = Array.from({ length: 20 }, () => ({
      code: randomCode(),
      data: grant({ subject: crypto.randomUUID() }),
      expiresAt: IN_A_MINUTE,
    }));
    for (const input of issued) await stores[0]!.put(input);

    for (const { code, data } of issued) {
      const winners = await race(stores, code, 200);
      assertEquals(winners.length, 1, "exactly one winner, 199 nulls");
      assertEquals(winners[0]!.data.subject, data.subject);
    }
    assertEquals(await storedCodes(t), 0);
  });
}

Deno.test("the same race double-redeems with a check-then-delete store (control)", async () => {
  // Shows the harness can fail: a SELECT followed by a DELETE, the pattern
  // `take()` replaces, hands one code to several callers.
  await using t = await testDatabase();
  await using pools = await nodes(4);
  const store = createCodeStore(t.sql, { table: t.table });
  const naive = pools.map((sql): CodeStore => ({
    put: store.put,
    spent: store.spent,
    revokeGrant: store.revokeGrant,
    async take(code) {
      const hash = hashCode(code);
      const [row] = await sql`
        select * from ${sql(t.table)} where code_hash = ${hash}
      `;
      if (!row) return null;
      await sql`delete from ${sql(t.table)} where code_hash = ${hash}`;
      return row as unknown as CodeEntry;
    },
  }));
  // Codes until one is redeemed twice (a bounded number: the race is won
  // often, but how often depends on the machine).
  let most = 0;
  for (let i = 0; i < 60 && most < 2; i++) {
    const code = randomCode();
    await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
    most = Math.max(most, (await race(naive, code, 200)).length);
  }
  assertGreater(most, 1, "check-then-delete let a code be redeemed twice");
});

Deno.test("of concurrent `take()`s in 3 OS processes, exactly one gets each entry", async () => {
  await using t = await testDatabase();
  const report = await runLoad({
    url: databaseUrl(),
    table: t.table,
    codes: 50,
    processes: 3,
    poolsPerProcess: 2,
    racersPerProcess: 4,
  });
  assertEquals(report.stored, 50);
  assertEquals(report.errors, {});
  assertEquals(report.winners, 50, "every code redeemed exactly once");
  assertEquals(report.doubleRedemptions, 0);
  assertEquals(report.unhandled, 0, "no unhandled rejection in any worker");
  assertEquals(report.mismatches, 0, "each winner got the grant stored");
  assertEquals(report.nulls, 50 * (3 * 4 - 1));
  assertEquals(report.rowsLeft, 0);
});

for (const isolation of ["repeatable read", "serializable"] as const) {
  for (const coalesce of [true, false]) {
    Deno.test(`with \`default_transaction_isolation\` = ${isolation}, the losers of a race get null, not a serialization failure (coalesce: ${coalesce})`, async () => {
      await using t = await testDatabase();
      await using pools = await nodes(4, 4, {
        connection: { default_transaction_isolation: isolation },
      });
      const stores = pools.map((sql) =>
        createCodeStore(sql, { table: t.table, coalesce })
      );
      const issued = Array.from({ length: 20 }, () => randomCode());
      for (const code of issued) {
        await stores[0]!.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
      }
      // Every code raced by 16 callers, all codes at once.
      const winners = await Promise.all(
        issued.map((code) => race(stores, code, 16)),
      );
      assertEquals(winners.map((w) => w.length), issued.map(() => 1));
      // And of concurrent puts of one code, one stores it, the others get
      // DuplicateCodeError.
      for (let i = 0; i < 10; i++) {
        const code = randomCode();
        const results = await Promise.allSettled(
          stores.map((store) =>
            store.put({ code, data: grant(), expiresAt: IN_A_MINUTE })
          ),
        );
        const failed = results.filter((r) => r.status === "rejected");
        assertEquals(failed.length, stores.length - 1);
        for (const r of failed) {
          assertInstanceOf(
            (r as PromiseRejectedResult).reason,
            DuplicateCodeError,
          );
        }
      }
    });
  }
}
