/**
 * JSON fields come back with the keys they were stored with, although
 * `JSON.parse` (V8, Deno 2.8 and 2.9, Node 24) can decode an escaped key as
 * one it saw before (chromium 521080746, nodejs/node#63785).
 */

import { assertEquals, assertThrows } from "@std/assert";
import fc from "fast-check";
import { createCodeStore } from "../mod.ts";
import { parseJson } from "../src/_parse_json.ts";
import {
  grant,
  IN_A_MINUTE,
  randomCode,
  testDatabase,
} from "./support/database.ts";

Deno.test("`take()` returns a claims key with an escaped quote as stored, after one with an escaped backslash", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const roundTrip = async (claims: Record<string, number>) => {
    const code = randomCode();
    await store.put({ code, data: grant({ claims }), expiresAt: IN_A_MINUTE });
    return Object.keys((await store.take(code))!.data.claims);
  };
  assertEquals(await roundTrip({ a: 1, "\\": 2 }), ["\\", "a"]);
  // Without the workaround V8 reads the key `"` back as `\` here.
  assertEquals(await roundTrip({ a: 1, '"': 2 }), ['"', "a"]);
  assertEquals(await roundTrip({ a: 1, "x\\": 2 }), ["a", "x\\"]);
  assertEquals(await roundTrip({ a: 1, 'x"': 2 }), ["a", 'x"']);
});

Deno.test("`parseJson()` reads any JSON text as the value it was written from", () => {
  const spaced = (value: unknown) => JSON.stringify(value, null, 1);
  fc.assert(
    fc.property(
      fc.jsonValue({ maxDepth: 4 }),
      fc.boolean(),
      (value, pretty) => {
        // Compared as text: JSON has no -0 (stringify writes it as 0).
        const text = pretty ? spaced(value) : JSON.stringify(value);
        assertEquals(JSON.stringify(parseJson(text)), JSON.stringify(value));
      },
    ),
    { numRuns: 2000 },
  );
  assertEquals(Object.keys(parseJson('{"__proto__": 1}') as object), [
    "__proto__",
  ]);
  assertEquals(parseJson('"\\ud83d\\ude00\\u00e9"'), "\u{1F600}é");
});

Deno.test("`parseJson()` refuses what `JSON.parse` refuses", () => {
  for (
    const text of [
      "",
      "{",
      '{"a\\"}',
      '"\\x"',
      '"\\u12"',
      "[1,]",
      "{,}",
      '{"a" 1}',
      "01",
      "1.",
      "+1",
      '"a\nb\\"',
      "[1] 2",
      "tru",
      '"\\',
    ]
  ) {
    assertThrows(() => JSON.parse(text), SyntaxError);
    assertThrows(() => parseJson(text), SyntaxError, undefined, text);
  }
});
