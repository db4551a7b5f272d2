/**
 * Coalescing: concurrent calls share statements, each caller still gets
 * exactly its own outcome.
 */

import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertInstanceOf,
  assertLessOrEqual,
  assertRejects,
  assertStrictEquals,
} from "@std/assert";
import { createCodeStore, DatabaseError, DuplicateCodeError } from "../mod.ts";
import {
  type Batch,
  coalescer,
  type Outcome,
  type Quiet,
  Slots,
} from "../src/coalesce.ts";
import {
  grant,
  IN_A_MINUTE,
  orHung,
  randomCode,
  statementCounter,
  testDatabase,
} from "./support/database.ts";

Deno.test("a lone call is sent at once, not after a timer; calls of one tick share a batch", async () => {
  const batches: number[][] = [];
  const run = coalescer<number, number>(
    ({ inputs }) => {
      batches.push([...inputs]);
      return Promise.resolve(inputs.map((value) => ({ value: value * 2 })));
    },
    {
      maxBatch: 3,
      slots: new Slots(1),
      timeout: 1000,
      expired: () => new Error("expired"),
    },
  );
  const lone = run(1);
  await Promise.resolve(); // one microtask turn, no timer
  assertEquals(batches, [[1]]);
  assertEquals(await lone, 2);

  batches.length = 0;
  const results = await Promise.all([2, 3, 4, 5, 6, 7, 8].map(run));
  assertEquals(results, [4, 6, 8, 10, 12, 14, 16]);
  // One in flight at a time, at most 3 per batch, in arrival order.
  assertEquals(batches, [[2, 3, 4], [5, 6, 7], [8]]);
});

Deno.test("a failed batch rejects every call in it; a call's own error stays its own", async () => {
  let fail = true;
  const run = coalescer<number, number>(
    ({ inputs }) =>
      fail ? Promise.reject(new Error("boom")) : Promise.resolve(
        inputs.map((value) =>
          value < 0 ? { error: new RangeError("negative") } : { value }
        ),
      ),
    {
      maxBatch: 10,
      slots: new Slots(2),
      timeout: 1000,
      expired: () => new Error("expired"),
    },
  );
  const failed = await Promise.allSettled([1, 2, 3].map(run));
  assert(
    failed.every((r) => r.status === "rejected" && r.reason.message === "boom"),
  );
  fail = false;
  const mixed = await Promise.allSettled([1, -1, 2].map(run));
  assertEquals(mixed[0], { status: "fulfilled", value: 1 });
  assertInstanceOf((mixed[1] as PromiseRejectedResult).reason, RangeError);
  assertEquals(mixed[2], { status: "fulfilled", value: 2 });
});

Deno.test("a call that times out while it waits for a slot is rejected without being sent", async () => {
  const sent: number[] = [];
  const run = coalescer<number, number>(
    ({ inputs }) => {
      sent.push(...inputs);
      return new Promise(() => {}); // the server never answers
    },
    {
      maxBatch: 1,
      slots: new Slots(1),
      timeout: 100,
      expired: (wasSent) => new Error(wasSent ? "sent" : "not sent"),
    },
  );
  const first = run(1);
  await new Promise((resolve) => setTimeout(resolve, 20));
  // Two calls at once: the second gets the slot when the first times out,
  // the third times out together with the second, still waiting.
  const outcomes = await Promise.allSettled([first, run(2), run(3)]);
  assertEquals(
    outcomes.map((o) => o.status === "rejected" && o.reason.message),
    ["not sent", "not sent", "not sent"],
  );
  assertEquals(sent, [1, 2], "the third call was never given to a runner");
});

Deno.test("a runner that returns fewer outcomes than calls: every call settles, nothing is unhandled", async () => {
  const unhandled: unknown[] = [];
  const record = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    unhandled.push(event.reason);
  };
  globalThis.addEventListener("unhandledrejection", record);
  try {
    const run = coalescer<number, number>(
      ({ inputs }) =>
        Promise.resolve(inputs.slice(1).map((value) => ({ value }))),
      {
        maxBatch: 10,
        slots: new Slots(1),
        timeout: 1000,
        expired: () => new Error("expired"),
      },
    );
    const settled = await orHung(Promise.allSettled([1, 2, 3].map(run)), 500);
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert(settled !== "hung", "every call settled");
    assertEquals(settled.map((r) => r.status), [
      "fulfilled",
      "fulfilled",
      "rejected",
    ]);
    assertEquals(unhandled, []);
  } finally {
    globalThis.removeEventListener("unhandledrejection", record);
  }
});

Deno.test("each call keeps its own deadline: one that times out in flight leaves the others of its batch alone, and is left out of a statement written later", async () => {
  const batches: {
    batch: Batch<number>;
    resolve: (outcomes: Outcome<number>[]) => void;
  }[] = [];
  const cancelled: number[][] = [];
  const run = coalescer<number, number>(
    (batch) =>
      new Promise((resolve) => {
        batch.signal.addEventListener(
          "abort",
          () => cancelled.push([...batch.inputs]),
        );
        batches.push({ batch, resolve });
      }),
    {
      maxBatch: 10,
      slots: new Slots(1),
      timeout: 100,
      expired: (sent) => new Error(sent ? "expired, sent" : "expired"),
    },
  );
  // One statement in flight, not yet written (its connection is opening).
  const old = run(1);
  await new Promise((resolve) => setTimeout(resolve, 60));
  const young = run(2); // waits for the slot
  assertEquals((await old.catch((error) => error)).message, "expired");
  // Abandoned: the runner is told at once (the server may be parsing it),
  // and a statement written late goes without the call that timed out.
  assertEquals(cancelled, [[1]]);
  const [first] = batches;
  assertEquals(first!.batch.send(), []);
  first!.resolve([{ value: 1 }]);
  // The young call goes out next, is written, and gets its outcome.
  await new Promise((resolve) => setTimeout(resolve, 0));
  const second = batches[1]!;
  assertEquals(second.batch.send(), [0]);
  second.resolve([{ value: 2 }]);
  assertEquals(await young, 2);

  // Two calls in a written statement: the first to time out leaves the
  // statement running for the other; once both have, it is cancelled.
  const busy = run(0);
  await new Promise((resolve) => setTimeout(resolve, 0));
  const a = run(3);
  await new Promise((resolve) => setTimeout(resolve, 40));
  const b = run(4);
  batches[2]!.resolve([{ value: 0 }]);
  assertEquals(await busy, 0);
  await new Promise((resolve) => setTimeout(resolve, 0));
  const both = batches[3]!;
  assertEquals(both.batch.inputs, [3, 4]);
  both.batch.send();
  assertEquals((await a.catch((error) => error)).message, "expired, sent");
  assertEquals(cancelled, [[1]], `4 still waits ${JSON.stringify(cancelled)}`);
  assertEquals((await b.catch((error) => error)).message, "expired, sent");
  assertEquals(cancelled, [[1], [3, 4]]);
});

Deno.test("a statement that never settles holds its slot only until its calls time out", async () => {
  const sent: number[][] = [];
  const run = coalescer<number, number>(
    ({ inputs }) => {
      sent.push([...inputs]);
      // The first statement is lost: its promise never settles.
      return inputs[0] === 1
        ? new Promise(() => {})
        : Promise.resolve(inputs.map((value) => ({ value })));
    },
    {
      maxBatch: 10,
      slots: new Slots(1),
      timeout: 100,
      expired: () => new Error("expired"),
    },
  );
  const lost = run(1);
  await new Promise((resolve) => setTimeout(resolve, 20));
  const next = run(2); // waits for the only slot
  await assertRejects(() => lost, Error, "expired");
  assertEquals(await next, 2, "the slot was given back");
  assertEquals(sent, [[1], [2]]);
});

Deno.test("after a statement fails because its connection broke, no statement is sent for the quiet period", async () => {
  const sentAt: number[] = [];
  const quiet: Quiet = {
    after: (error) => (error as Error).message === "ECONNRESET" ? 150 : 0,
    until: 0,
  };
  const run = coalescer<number, number>(
    ({ inputs }) => {
      sentAt.push(performance.now());
      return inputs[0] === 1
        ? Promise.reject(new Error("ECONNRESET"))
        : Promise.resolve(inputs.map((value) => ({ value })));
    },
    {
      maxBatch: 1,
      slots: new Slots(1),
      timeout: 1000,
      expired: () => new Error("expired"),
      quiet,
    },
  );
  const started = performance.now();
  const broken = run(1);
  const waiting = run(2); // waits for the slot the broken statement holds
  await assertRejects(() => broken, Error, "ECONNRESET");
  assertEquals(await waiting, 2);
  assertEquals(sentAt.length, 2);
  assertGreaterOrEqual(sentAt[1]! - started, 140, "sent after the pause");
  // Other failures do not pause.
  quiet.until = 0;
  const plain = coalescer<number, number>(
    () => Promise.reject(new Error("42P01")),
    {
      maxBatch: 1,
      slots: new Slots(1),
      timeout: 1000,
      expired: () => 0,
      quiet,
    },
  );
  await assertRejects(() => plain(1));
  assertEquals(quiet.until, 0);
});

Deno.test("concurrent `take()`s share statements, and each caller gets its own entry", async () => {
  await using t = await testDatabase({ max: 4 });
  const statements = await statementCounter(t);
  const store = createCodeStore(t.sql, { table: t.table });
  const direct = createCodeStore(t.sql, { table: t.table, coalesce: false });
  const codes = Array.from({ length: 150 }, () => randomCode());
  for (const [i, code] of codes.entries()) {
    await direct.put({
      code,
      data: grant({ subject: `user-${i}` }),
      expiresAt: IN_A_MINUTE,
    });
  }
  const before = await statements();
  // Every code twice, plus codes never issued, all at once.
  const calls = [...codes, ...codes, randomCode(), randomCode()];
  const entries = await Promise.all(calls.map((code) => store.take(code)));
  for (const [i] of codes.entries()) {
    const got = [entries[i], entries[i + codes.length]].filter((e) => e);
    assertEquals(got.length, 1, "one of the two racers gets it");
    assertEquals(got[0]!.data.subject, `user-${i}`);
  }
  assertStrictEquals(entries.at(-1), null);
  // 302 calls in batches of at most 64: between 5 and (much) fewer than 302.
  const deletes = await statements() - before;
  assertGreaterOrEqual(deletes, Math.ceil(calls.length / 64));
  assertLessOrEqual(deletes, 30);
});

Deno.test("concurrent `put()`s share statements; a duplicate fails only its own caller and overwrites nothing", async () => {
  await using t = await testDatabase();
  const statements = await statementCounter(t);
  const store = createCodeStore(t.sql, { table: t.table });
  const existing = randomCode();
  await store.put({
    code: existing,
    data: grant({ subject: "original" }),
    expiresAt: IN_A_MINUTE,
  });
  const fresh = Array.from({ length: 40 }, () => randomCode());
  const twice = randomCode();
  const before = await statements();
  const results = await Promise.allSettled([
    ...fresh.map((code) =>
      store.put({ code, data: grant(), expiresAt: IN_A_MINUTE })
    ),
    store.put({
      code: existing,
      data: grant({ subject: "overwrite" }),
      expiresAt: IN_A_MINUTE,
    }),
    store.put({ code: twice, data: grant({ subject: "first" }), expiresAt: 1 }),
    store.put({
      code: twice,
      data: grant({ subject: "second" }),
      expiresAt: 1,
    }),
  ]);
  assertLessOrEqual(
    await statements() - before,
    30,
    "43 puts shared statements",
  );
  for (const result of results.slice(0, 40)) {
    assertEquals(result.status, "fulfilled");
  }
  const [overwrite, first, second] = results.slice(40);
  assertInstanceOf(
    (overwrite as PromiseRejectedResult).reason,
    DuplicateCodeError,
  );
  // The same code twice in one statement: the first caller's row is
  // stored, the second caller is refused.
  assertEquals(first!.status, "fulfilled");
  assertInstanceOf(
    (second as PromiseRejectedResult).reason,
    DuplicateCodeError,
  );
  assertEquals((await store.take(existing))?.data.subject, "original");
  assertEquals((await store.take(twice))?.data.subject, "first");
  for (const code of fresh) assert(await store.take(code));
});

Deno.test("a code taken twice in one statement goes to the first caller", async () => {
  await using t = await testDatabase();
  const statements = await statementCounter(t);
  const store = createCodeStore(t.sql, { table: t.table });
  for (let round = 0; round < 5; round++) {
    const code = randomCode();
    await store.put({ code, data: grant(), expiresAt: IN_A_MINUTE });
    const before = await statements();
    const [first, second, third] = await Promise.all([
      store.take(code),
      store.take(code),
      store.take(code),
    ]);
    assertEquals(await statements() - before, 1, "one statement");
    assert(first !== null);
    assertStrictEquals(second, null);
    assertStrictEquals(third, null);
  }
});

Deno.test("a statement that fails rejects every call in its batch with the database error", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: `${t.schema}.missing` });
  const results = await Promise.allSettled(
    Array.from({ length: 10 }, () => store.take(randomCode())),
  );
  for (const result of results) {
    assertEquals(result.status, "rejected");
    const error = (result as PromiseRejectedResult).reason;
    assertInstanceOf(error, DatabaseError);
    assertEquals(error.reason, "42P01");
  }
});

Deno.test("`coalesce: false` runs one plain statement per call", async () => {
  await using t = await testDatabase();
  const statements = await statementCounter(t);
  const store = createCodeStore(t.sql, { table: t.table, coalesce: false });
  const codes = Array.from({ length: 20 }, () => randomCode());
  await Promise.all(
    codes.map((code) => store.put({ code, data: grant(), expiresAt: 1 })),
  );
  assertEquals(await statements(), 20);
  await assertRejects(
    () => store.put({ code: codes[0]!, data: grant(), expiresAt: 1 }),
    DuplicateCodeError,
  );
  // The duplicate's INSERT ran and inserted nothing.
  assertEquals(await statements(), 21);
  const entries = await Promise.all(codes.map((code) => store.take(code)));
  assertEquals(await statements(), 41);
  assert(entries.every((e) => e !== null));
});

Deno.test("`coalesce` options are validated", async () => {
  await using t = await testDatabase();
  for (
    const [coalesce, kind] of [
      [{ maxBatch: 0 }, RangeError],
      [{ maxBatch: 1.5 }, RangeError],
      [{ concurrency: -1 }, RangeError],
      [{ maxBatch: 10_001 }, RangeError],
      [{ maxBatch: "2" }, TypeError],
      [{ batch: 2 }, TypeError],
      ["yes", TypeError],
      [null, TypeError],
    ] as const
  ) {
    try {
      // deno-lint-ignore no-explicit-any
      createCodeStore(t.sql, { table: t.table, coalesce } as any);
      throw new Error(`accepted ${JSON.stringify(coalesce)}`);
    } catch (error) {
      assertInstanceOf(error, kind, JSON.stringify(coalesce));
    }
  }
  const store = createCodeStore(t.sql, {
    table: t.table,
    coalesce: { maxBatch: 2, concurrency: 1 },
  });
  const codes = Array.from({ length: 5 }, () => randomCode());
  await Promise.all(
    codes.map((code) => store.put({ code, data: grant(), expiresAt: 1 })),
  );
  const entries = await Promise.all(codes.map((code) => store.take(code)));
  assert(entries.every((e) => e !== null));
});
