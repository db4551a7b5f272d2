/**
 * Faults real deployments meet: backends killed mid-load, the server
 * restarted, the server unreachable, row locks and timeouts. In every case a
 * code is redeemed at most once, every call settles (none hangs), no
 * rejection goes unhandled, and the same store recovers by itself.
 */

import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertRejects,
} from "@std/assert";
import postgres, { POSTGRES_MAJOR } from "../tools/postgres.ts";
import {
  type CodeEntry,
  type CodeStore,
  createCodeStore,
  DatabaseError,
  DatabaseUnavailableError,
  hashCode,
  migrate,
} from "../mod.ts";
import {
  connect,
  databaseUrl,
  end,
  grant,
  IN_A_MINUTE,
  isStored,
  lockRow,
  type PoolOptions,
  randomCode,
  testDatabase,
} from "./support/database.ts";
import { EmbeddedPostgres } from "../tools/embedded_postgres.ts";
import { startTcpProxy } from "./support/tcp_proxy.ts";

/** The pool settings the README recommends. */
const RESILIENT: PoolOptions = {
  fetch_types: false,
  connect_timeout: 2,
  backoff: false,
};
/** Connection errors a killed backend or a stopped server may surface. */
const CONNECTION_ERRORS = [
  "57P01", // terminating connection due to administrator command
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "ECONNRESET",
  "EPIPE",
  // postgres.js sometimes stalls a reconnect after a termination until
  // connect_timeout, and calls queued behind it can reach the store timeout.
  "CONNECT_TIMEOUT",
  "ERR_OPERATION_TIMEOUT",
];

/** Backends the killer must terminate while the load runs. */
const ENOUGH_TERMINATIONS = 10;
/** How long the load may take to see them (a bound, not a measure). */
const LOAD_BOUND_MS = 60_000;

const unhandled: unknown[] = [];
globalThis.addEventListener("unhandledrejection", (event) => {
  unhandled.push(event.reason);
});

/** Settles `promise`, or reports it as hung after `ms`. */
async function settle<T>(
  promise: Promise<T>,
  ms: number,
): Promise<{ value?: T; error?: unknown; hung?: true }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<{ hung: true }>((resolve) => {
    timer = setTimeout(() => resolve({ hung: true }), ms);
  });
  try {
    return await Promise.race([
      promise.then((value) => ({ value }), (error) => ({ error })),
      hung,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * What a call failed with: a database error's reason (the SQLSTATE or the
 * driver's code), else the store error's code.
 */
function kind(error: unknown): string {
  if (error instanceof DatabaseError) return error.reason;
  const e = error as { code?: unknown; name?: unknown };
  return String(e?.code ?? e?.name);
}

/**
 * Asserts that `store` works again: a put and a take succeed within
 * `connections + 1` attempts, every failed attempt being a connection error
 * (a connection's first query after a reconnect can fail with the error
 * its killed predecessor received: porsager/postgres #1223).
 */
async function recovers(store: CodeStore, connections: number) {
  const failures: string[] = [];
  for (let attempt = 0; attempt <= connections; attempt++) {
    try {
      const [code] = await issue(store, 1);
      assertEquals((await store.take(code!))?.data.subject, "user-0");
      return;
    } catch (error) {
      assert(CONNECTION_ERRORS.includes(kind(error)), String(error));
      failures.push(kind(error));
    }
  }
  throw new Error(`the store did not recover: ${failures.join(", ")}`);
}

/** Puts `n` codes through `store`; returns them with their subjects. */
async function issue(store: CodeStore, n: number) {
  const codes = Array.from({ length: n }, () => randomCode());
  for (let i = 0; i < n; i += 50) {
    await Promise.all(
      codes.slice(i, i + 50).map((code, j) =>
        store.put({
          code,
          data: grant({ subject: `user-${i + j}` }),
          expiresAt: IN_A_MINUTE,
        })
      ),
    );
  }
  return codes;
}

/**
 * Races `racers` takes of every code over the stores, in waves of `wave`
 * codes, and tallies per code who won, and every error by kind.
 */
async function raceAll(
  stores: CodeStore[],
  codes: string[],
  { racers = 4, wave = 50, timeout = 15_000 } = {},
) {
  const wins = new Map<string, CodeEntry[]>();
  const errors: Record<string, number> = {};
  const erroredCodes = new Set<string>();
  let hung = 0;
  for (let i = 0; i < codes.length; i += wave) {
    await Promise.all(
      codes.slice(i, i + wave).flatMap((code) =>
        Array.from({ length: racers }, async (_, r) => {
          const result = await settle(
            stores[r % stores.length]!.take(code),
            timeout,
          );
          if (result.hung) hung++;
          else if (result.error !== undefined) {
            errors[kind(result.error)] = (errors[kind(result.error)] ?? 0) + 1;
            erroredCodes.add(code);
          } else if (result.value) {
            wins.set(code, [...(wins.get(code) ?? []), result.value]);
          }
        })
      ),
    );
  }
  const doubles = [...wins.values()].filter((w) => w.length > 1).length;
  return { wins, errors, erroredCodes, hung, doubles };
}

type Race = Awaited<ReturnType<typeof raceAll>>;

/** Adds a round's tally to `total`. */
function merge(total: Race, round: Race): void {
  for (const [code, won] of round.wins) {
    total.wins.set(code, [...(total.wins.get(code) ?? []), ...won]);
  }
  for (const [k, n] of Object.entries(round.errors)) {
    total.errors[k] = (total.errors[k] ?? 0) + n;
  }
  for (const code of round.erroredCodes) total.erroredCodes.add(code);
  total.hung += round.hung;
  total.doubles += round.doubles;
}

/** An empty tally. */
function tally(): Race {
  return {
    wins: new Map(),
    errors: {},
    erroredCodes: new Set(),
    hung: 0,
    doubles: 0,
  };
}

Deno.test("backends terminated mid-load: calls fail with the database error, no code is redeemed twice, the store recovers", async () => {
  await using t = await testDatabase();
  const victims = Array.from({ length: 4 }, () =>
    connect({
      ...RESILIENT,
      max: 5,
      connection: { application_name: "attesto-victim" },
    }));
  try {
    const stores = victims.map((sql) =>
      createCodeStore(sql, { table: t.table })
    );
    const issuer = createCodeStore(t.sql, { table: t.table });

    let terminated = 0;
    let killing = true;
    const killer = (async () => {
      while (killing) {
        const [{ n }] = await t.sql<[{ n: number }]>`
          select count(*) filter (where pg_terminate_backend(pid))::int as n
          from pg_stat_activity
          where application_name = 'attesto-victim' and pid <> pg_backend_pid()
        `;
        terminated += n;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    // Load in rounds until the killer has hit it enough and faults have
    // surfaced, whatever the machine's speed; bounded in time.
    const codes: string[] = [];
    const result = tally();
    const giveUp = performance.now() + LOAD_BOUND_MS;
    try {
      while (
        terminated <= ENOUGH_TERMINATIONS ||
        Object.keys(result.errors).length === 0
      ) {
        assert(
          performance.now() < giveUp,
          `only ${terminated} backends terminated in ${LOAD_BOUND_MS} ms`,
        );
        const round = await issue(issuer, 100);
        codes.push(...round);
        merge(
          result,
          await raceAll(stores, round, { wave: 20, timeout: 7000 }),
        );
      }
    } finally {
      killing = false;
      await killer;
    }

    console.log(
      `faults: ${terminated} backends terminated over ${codes.length} codes; ` +
        `errors ${
          JSON.stringify(result.errors)
        }; ${result.wins.size} codes won`,
    );
    assertEquals(result.hung, 0, "every call settled");
    assertEquals(result.doubles, 0, "no entry returned to two callers");
    for (const k of Object.keys(result.errors)) {
      assert(CONNECTION_ERRORS.includes(k), `unexpected error kind ${k}`);
    }
    // A code nobody won was hit by an error (its DELETE may or may not
    // have committed); codes without errors were all redeemed.
    for (const code of codes) {
      if (!result.wins.has(code)) assert(result.erroredCodes.has(code));
    }
    // Later calls on the same stores succeed, once each connection has
    // shed the error postgres.js replays after a reconnect (#1223).
    for (const store of stores) await recovers(store, 5);
    assertEquals(unhandled, []);
  } finally {
    await Promise.all(victims.map(end));
  }
});

Deno.test("the server restarted during load: calls reject promptly, the same store works again", async () => {
  await using server = await EmbeddedPostgres.create();
  const admin = postgres(server.url, {
    ...RESILIENT,
    max: 1,
    onnotice: () => {},
  });
  const pools = Array.from(
    { length: 2 },
    () => postgres(server.url, { ...RESILIENT, max: 5 }),
  );
  try {
    await migrate(admin);
    const stores = pools.map((sql) => createCodeStore(sql));
    const codes = await issue(stores[0]!, 600);

    // Load, and a fast shutdown in the middle of it: the load goes on (with
    // codes never issued once the 300 are raced) until calls have failed,
    // whatever the machine's speed; bounded in time.
    const during = tally();
    let stopping: Promise<void> | undefined;
    const giveUp = performance.now() + LOAD_BOUND_MS;
    for (let i = 0; Object.keys(during.errors).length === 0; i += 10) {
      assert(performance.now() < giveUp, "the shutdown failed some call");
      const wave = i < 300
        ? codes.slice(i, i + 10)
        : Array.from({ length: 10 }, () => randomCode());
      const round = raceAll(stores, wave, { wave: 10 });
      stopping ??= server.stop();
      merge(during, await round);
    }
    await stopping;

    // During the outage every call rejects, and promptly.
    const outage: number[] = [];
    for (const store of stores) {
      for (
        const call of [
          (): Promise<unknown> => store.take(codes[599]!),
          (): Promise<unknown> => issue(store, 1),
        ]
      ) {
        const started = performance.now();
        const result = await settle(call(), 10_000);
        outage.push(performance.now() - started);
        assert(!result.hung, "no call hangs while the server is down");
        assert(result.error !== undefined, "nothing reported as success");
        // The connection's own error, not the store's timeout: refused at
        // once, not queued until a deadline.
        assertEquals(kind(result.error), "ECONNREFUSED");
      }
    }

    await server.start();
    // The same store objects, no re-creation. A connection's first query
    // after reconnecting can be rejected, before it runs, with the error
    // the old server sent as it shut down (57P01, or 57P03 to a connection
    // opened during the shutdown): postgres.js replays it
    // (porsager/postgres #1223). Codes hit by that are raced again.
    const rounds = [during];
    let replayed = 0;
    for (let pending = codes; pending.length > 0;) {
      assert(rounds.length <= 5, "the store recovers after the restart");
      const round = await raceAll(stores, pending);
      for (const [k, n] of Object.entries(round.errors)) {
        assert(["57P01", "57P03"].includes(k), `unexpected error kind ${k}`);
        replayed += n;
      }
      rounds.push(round);
      pending = [...round.erroredCodes];
    }
    for (const code of codes) {
      const won = rounds.reduce(
        (n, r) => n + (r.wins.get(code)?.length ?? 0),
        0,
      );
      assert(won <= 1, "redeemed at most once across the restart");
      if (!during.erroredCodes.has(code)) assertEquals(won, 1, "not lost");
    }
    const [fresh] = await issue(stores[1]!, 1);
    assert(await stores[0]!.take(fresh!));
    console.log(
      `restart: ${Object.values(during.errors).reduce((a, b) => a + b, 0)} ` +
        `calls failed during shutdown (${JSON.stringify(during.errors)}), ` +
        `${replayed} replayed errors after it, ` +
        `outage calls rejected in at most ${
          Math.round(Math.max(...outage))
        } ms`,
    );
    assertEquals(unhandled, []);
  } finally {
    await Promise.all([admin, ...pools].map((sql) => sql.end({ timeout: 5 })));
  }
});

Deno.test("with postgres.js's default backoff, the store's timeout bounds every call in an outage, and a cancelled call never runs", async () => {
  await using server = await EmbeddedPostgres.create();
  const setup = postgres(server.url, {
    ...RESILIENT,
    max: 1,
    onnotice: () => {},
  });
  // postgres.js defaults (backoff up to 20 s per reconnect attempt).
  const pool = postgres(server.url, { fetch_types: false, max: 2 });
  try {
    await migrate(setup);
    const store = createCodeStore(pool, { timeoutMs: 1000 });
    const [code] = await issue(store, 1);
    await server.stop();

    // Rounds of concurrent takes: each failed connect makes postgres.js
    // wait longer before the next one (0.03 s, 0.09 s, 0.27 s, ... 20 s).
    const calls: { error?: unknown; hung?: true; ms: number }[] = [];
    for (let round = 0; round < 8; round++) {
      calls.push(
        ...await Promise.all(Array.from({ length: 4 }, async () => {
          const started = performance.now();
          const result = await settle(store.take(code!), 10_000);
          return { ...result, ms: performance.now() - started };
        })),
      );
    }
    const kinds = new Set(calls.map((c) => kind(c.error)));
    assert(calls.every((c) => c.error !== undefined), "nothing succeeds");
    assert(calls.every((c) => !c.hung), "every call settled");
    console.log(
      `backoff outage: ${calls.length} calls settled, the slowest in ${
        Math.round(Math.max(...calls.map((c) => c.ms)))
      } ms (timeout 1000 ms)`,
    );
    // postgres.js 3.4 queues calls while it backs off, and the store's
    // timeout ends them; 4.x fails them fast with the connection's error.
    if (POSTGRES_MAJOR === 3) {
      assert(kinds.has("ERR_OPERATION_TIMEOUT"), "queued calls timed out");
    }
    for (const k of kinds) {
      assert(["ECONNREFUSED", "ERR_OPERATION_TIMEOUT"].includes(k), k);
    }

    // None of the cancelled takes ran once the server was back.
    await server.start();
    await new Promise((resolve) => setTimeout(resolve, 500));
    const entry = await createCodeStore(setup).take(code!);
    assertEquals(entry?.data.subject, "user-0");
    assertEquals(unhandled, []);
  } finally {
    await Promise.all([setup, pool].map((sql) => sql.end({ timeout: 1 })));
  }
});

Deno.test("a server unreachable from the start: put and take reject promptly, nothing succeeds", async () => {
  // A port nobody listens on (refused), and a listener that accepts and
  // never answers (a hung server or a black-holed network).
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const refusedPort = closed.addr.port;
  closed.close();
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) held.push(conn);
  })();
  try {
    const cases = [
      [refusedPort, "ECONNREFUSED"],
      [silent.addr.port, "CONNECT_TIMEOUT"],
    ] as const;
    for (const [port, expected] of cases) {
      const sql = postgres(`postgres://postgres@127.0.0.1:${port}/test`, {
        ...RESILIENT,
        connect_timeout: 1,
      });
      try {
        const store = createCodeStore(sql);
        for (
          const call of [
            (): Promise<unknown> => store.take(randomCode()),
            (): Promise<unknown> =>
              store.put({
                code: randomCode(),
                data: grant(),
                expiresAt: IN_A_MINUTE,
              }),
          ]
        ) {
          // The connection's own error (refused, or its connect_timeout),
          // not the store's 10 s timeout.
          const result = await settle(call(), 30_000);
          assert(!result.hung);
          assertInstanceOf(result.error, DatabaseUnavailableError);
          assertEquals(result.error.sent, false, "nothing was sent");
          assertEquals(kind(result.error), expected);
        }
      } finally {
        await sql.end({ timeout: 1 });
      }
    }
  } finally {
    silent.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  }
  assertEquals(unhandled, []);
});

Deno.test("a row locked by another transaction: `take()` waits, then exactly one caller gets it", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const pools = Array.from({ length: 2 }, () => connect({ max: 5 }));
  try {
    const stores = pools.map((sql) => createCodeStore(sql, { table: t.table }));
    for (const outcome of ["rollback", "commit"] as const) {
      const [code] = await issue(store, 1);
      const locker = await t.sql.reserve();
      try {
        await locker`begin`;
        // The other transaction redeems the same code, not yet committed.
        await locker`
          delete from ${locker(t.table)}
          where code_hash = ${hashCode(code!)}
        `;
        const waiting = Array.from(
          { length: 10 },
          (_, i) => stores[i % 2]!.take(code!),
        );
        const early = await settle(Promise.race(waiting), 300);
        assert(early.hung, "takes wait for the row lock");
        await locker.unsafe(outcome);
        const results = await Promise.all(waiting);
        const winners = results.filter((r) => r !== null).length;
        // Rolled back: the row is back and exactly one waiter gets it.
        // Committed: the other transaction redeemed it; nobody here does.
        assertEquals(winners, outcome === "rollback" ? 1 : 0);
      } finally {
        locker.release();
      }
    }
  } finally {
    await Promise.all(pools.map(end));
  }
});

Deno.test("a lock timeout or statement timeout: `take()` fails cleanly and a retry redeems once", async () => {
  await using t = await testDatabase();
  const store = createCodeStore(t.sql, { table: t.table });
  const settings = [
    [{ lock_timeout: 100 }, "55P03"],
    [{ statement_timeout: 100 }, "57014"],
  ] as const;
  for (const [connection, expected] of settings) {
    const impatient = connect({ max: 2, connection });
    try {
      const fast = createCodeStore(impatient, { table: t.table });
      const [code] = await issue(store, 1);
      await using lock = await lockRow(t, code!);
      const error = await assertRejects(() => fast.take(code!));
      assertEquals(kind(error), expected);
      await lock.release();
      // The failed take spent nothing: the retry gets the entry, once.
      const retries = await Promise.all([fast.take(code!), fast.take(code!)]);
      assertEquals(retries.filter((r) => r !== null).length, 1);
    } finally {
      await end(impatient);
    }
  }
});

Deno.test("a take cut mid-flight is returned to its caller, left intact, or reported as sent: never spent silently", async () => {
  // The connection is reset at a random moment of the take: before the
  // statement is written, while the server runs it, after it committed
  // and before its result arrives. Runs until it has seen a cut after the
  // commit (spent, reported as sent), and at least 10 rounds, bounded in
  // time.
  await using t = await testDatabase();
  const direct = createCodeStore(t.sql, { table: t.table });
  const seen: Record<string, number> = {};
  const giveUp = performance.now() + LOAD_BOUND_MS;
  let rounds = 0;
  while (
    (rounds++ < 10 || !seen["spent, reported as sent"]) &&
    performance.now() < giveUp
  ) {
    await using proxy = await startTcpProxy(databaseUrl());
    const pool = postgres(proxy.url, { ...RESILIENT, max: 1 });
    try {
      const store = createCodeStore(pool, { table: t.table });
      assertEquals(await store.take(randomCode()), null); // connected
      const [code] = await issue(direct, 1);
      const taking = store.take(code!).then(
        (entry) => ({ entry }),
        (error) => ({ error }),
      );
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 4));
      proxy.reset();
      const result = await taking;
      const stored = await isStored(t, code!);
      let kind: string;
      if ("entry" in result) {
        assert(result.entry !== null, "a stored code is never answered null");
        assert(!stored);
        kind = "returned";
      } else {
        assertInstanceOf(result.error, DatabaseError);
        if (stored) kind = "intact";
        else {
          assertEquals(result.error.sent, true, "spent, so reported as sent");
          kind = "spent, reported as sent";
        }
      }
      seen[kind] = (seen[kind] ?? 0) + 1;
    } finally {
      await pool.end({ timeout: 1 });
    }
  }
  console.log(`cut takes: ${JSON.stringify(seen)}`);
  assert(seen["spent, reported as sent"], JSON.stringify(seen));
  assertEquals(unhandled, []);
});
