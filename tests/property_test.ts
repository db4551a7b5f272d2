/**
 * Property-based tests (fast-check) of the schema and of the store's input
 * handling: valid records round-trip, broken ones are rejected naming the
 * field and reach no query, and no string can make `take` or the `table`
 * option misbehave.
 */

import { assert, assertEquals, assertInstanceOf } from "@std/assert";
import fc from "fast-check";
import {
  type CodeRecord,
  createCodeStore,
  fromRecord,
  InvalidRecordError,
  migrationSql,
  toRecord,
} from "../mod.ts";
import { isCodeSyntax } from "../src/_grammar.ts";
import {
  brokenEntry,
  codeEntry,
  expiresAt,
  grantData,
  normalised,
} from "./support/arbitraries.ts";
import { randomCode, storedCodes, testDatabase } from "./support/database.ts";

/** How many cases each property tries (the Guarantees table quotes it). */
const RUNS = 2000;

Deno.test("any valid record round-trips through `fromRecord()` and `toRecord()`", () => {
  fc.assert(
    fc.property(codeEntry, (entry) => {
      assertEquals(toRecord(fromRecord(entry)), normalised(entry));
    }),
    { numRuns: RUNS },
  );
});

Deno.test("any record with one field broken is rejected with InvalidRecordError naming that field", () => {
  fc.assert(
    fc.property(brokenEntry, ({ entry, field }) => {
      try {
        fromRecord(entry as CodeRecord);
      } catch (error) {
        assertInstanceOf(error, InvalidRecordError);
        assert(
          error.field === field || error.field.startsWith(`${field}[`),
          `expected ${field}, got ${error.field}`,
        );
        return;
      }
      throw new Error(`accepted a broken ${field}`);
    }),
    { numRuns: RUNS },
  );
});

Deno.test("`put()` of any valid record, then `take()`, returns it; a broken one reaches no query", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });

  await fc.assert(
    fc.asyncProperty(grantData, expiresAt, async (data, expires) => {
      const code = randomCode();
      await store.put({ code, data, expiresAt: expires });
      const entry = await store.take(code);
      assert(entry);
      assertEquals(
        entry,
        normalised({ codeHash: entry.codeHash, data, expiresAt: expires }),
      );
    }),
    { numRuns: 200 },
  );

  queries = 0;
  await fc.assert(
    fc.asyncProperty(brokenEntry, async ({ entry, field }) => {
      const { data, expiresAt } = entry as CodeRecord;
      try {
        await store.put({ code: randomCode(), data, expiresAt });
      } catch (error) {
        assertInstanceOf(error, InvalidRecordError);
        assert(error.field.startsWith(field), `${field} / ${error.field}`);
        return;
      }
      throw new Error(`put accepted a broken ${field}`);
    }),
    { numRuns: RUNS },
  );
  assertEquals(queries, 0, "no broken record reached the database");
  assertEquals(await storedCodes(t), 0);
});

Deno.test("`take()` of any string never throws, and answers null without a query unless a server could have issued it", async () => {
  let queries = 0;
  await using t = await testDatabase({ debug: () => queries++ });
  const store = createCodeStore(t.sql, { table: t.table });
  const anyString = fc.oneof(
    fc.string({ unit: "binary", maxLength: 600 }),
    fc.string({ unit: "grapheme", maxLength: 50 }),
    fc.string({ maxLength: 600 }),
    fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)),
  );
  queries = 0;
  let possible = 0;
  await fc.assert(
    fc.asyncProperty(anyString, async (code) => {
      const before = queries;
      assertEquals(await store.take(code), null);
      if (isCodeSyntax(code)) possible++;
      else assertEquals(queries, before, "impossible codes cost no query");
    }),
    { numRuns: RUNS },
  );
  assertEquals(queries, possible);
});

Deno.test("no `table` option can inject SQL: it is a plain identifier or a TypeError", () => {
  const IDENTIFIER = /^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$/;
  const injections = fc.tuple(
    fc.stringMatching(/^[a-z_]{1,10}$/),
    fc.constantFrom(
      "; drop table x",
      '"; drop table x; --',
      " --",
      "/*",
      "'",
      '"',
      ".",
      "\0",
      " ",
      "\n",
      ")",
      "$1",
    ),
    fc.string({ maxLength: 10 }),
  ).map((parts) => parts.join(""));
  fc.assert(
    fc.property(
      fc.oneof(fc.string({ unit: "binary", maxLength: 140 }), injections),
      (table) => {
        let ddl: string;
        try {
          ddl = migrationSql({ table });
        } catch (error) {
          assertInstanceOf(error, TypeError);
          assert(!IDENTIFIER.test(table));
          return;
        }
        assert(IDENTIFIER.test(table), `accepted ${JSON.stringify(table)}`);
        const quoted = table.split(".").map((p) => `"${p}"`).join(".");
        assert(ddl.includes(`CREATE TABLE IF NOT EXISTS ${quoted} (`));
      },
    ),
    { numRuns: RUNS },
  );
});
