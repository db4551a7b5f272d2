/**
 * The plaintext code never leaves the process: not in the server's log
 * (every statement and its parameters logged), not in a row, not in any
 * error's message, stack or properties, not on the console.
 */

import {
  assert,
  assertEquals,
  assertFalse,
  assertInstanceOf,
  assertStringIncludes,
} from "@std/assert";
import postgres from "../tools/postgres.ts";
import {
  createCodeStore,
  DatabaseError,
  DuplicateCodeError,
  hashCode,
  InvalidRecordError,
  migrate,
  MissingRepositoryError,
  OperationTimeoutError,
} from "../mod.ts";
import { grant, IN_A_MINUTE, randomCode } from "./support/database.ts";
import { EmbeddedPostgres } from "../tools/embedded_postgres.ts";
import { errorTexts } from "./support/error_texts.ts";

Deno.test("no plaintext code reaches the server log, a row, an error or the console", async () => {
  await using server = await EmbeddedPostgres.create({
    settings: {
      log_statement: "all",
      log_min_error_statement: "info",
      log_parameter_max_length: -1,
      log_parameter_max_length_on_error: -1,
      log_connections: "on",
    },
  });
  const console_: string[] = [];
  const saved = { ...console };
  for (const method of ["log", "info", "warn", "error", "debug"] as const) {
    console[method] = (...args: unknown[]) =>
      console_.push(args.map(String).join(" "));
  }
  const sql = postgres(server.url, { onnotice: () => {}, max: 4 });
  const codes: string[] = [];
  const errors: unknown[] = [];
  const code = () => {
    const value = randomCode();
    codes.push(value);
    return value;
  };
  const expectError = async (fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (error) {
      errors.push(error);
      return error;
    }
    throw new Error("expected an error");
  };
  let rows: string[] = [];
  try {
    await migrate(sql);
    const store = createCodeStore(sql);
    const issued = Array.from({ length: 20 }, code);
    for (const c of issued) {
      await store.put({ code: c, data: grant(), expiresAt: IN_A_MINUTE });
    }
    rows = (await sql<{ row: string }[]>`
      select row_to_json(c)::text as row from authorization_codes c
    `).map((r) => r.row);

    // Every path a code can travel, with its errors collected.
    for (const c of issued.slice(0, 10)) assert(await store.take(c));
    for (const c of issued.slice(0, 3)) assertEquals(await store.take(c), null);
    await store.take(code());
    await store.take(`${code()}\0`);
    const duplicate = await expectError(() =>
      store.put({ code: issued[15]!, data: grant(), expiresAt: IN_A_MINUTE })
    );
    assert(duplicate instanceof DuplicateCodeError);
    const invalid = await expectError(() =>
      store.put({
        code: code(),
        data: grant({ redirectUri: `https://x.example/#${codes.at(-1)}` }),
        expiresAt: IN_A_MINUTE,
      })
    );
    assert(invalid instanceof InvalidRecordError);
    const missing = await expectError(() =>
      createCodeStore(() => undefined).take(code())
    );
    assert(missing instanceof MissingRepositoryError);
    // A row lock: the store's timeout, and the server's statement_timeout.
    const [locked] = issued.slice(15);
    const holder = await sql.reserve();
    const impatient = postgres(server.url, {
      max: 1,
      connection: { statement_timeout: 100 },
    });
    try {
      await holder`begin`;
      await holder`
        select 1 from authorization_codes
        where code_hash = ${hashCode(locked!)} for update
      `;
      const timedOut = await expectError(() =>
        createCodeStore(sql, { timeoutMs: 200 }).take(locked!)
      );
      assert(timedOut instanceof OperationTimeoutError);
      const cancelled = await expectError(() =>
        createCodeStore(impatient).take(locked!)
      );
      assertInstanceOf(cancelled, DatabaseError);
      assertEquals(cancelled.reason, "57014");
      // The driver's error held the statement's parameters (the hash) as
      // non-enumerable properties; the store's holds nothing of them.
      assertFalse(errorTexts(cancelled).join("\n").includes(hashCode(locked!)));
      await holder`rollback`;
    } finally {
      holder.release();
      await impatient.end({ timeout: 1 });
    }
    // Database errors: a missing table, for take and put.
    const noTable = createCodeStore(sql, { table: "no_such_table" });
    const lost = code();
    await expectError(() => noTable.take(lost));
    await expectError(() =>
      noTable.put({ code: code(), data: grant(), expiresAt: IN_A_MINUTE })
    );
  } finally {
    Object.assign(console, saved);
    await sql.end({ timeout: 5 });
  }
  await server.stop();

  const log = await Deno.readTextFile(server.logFile);
  // The log is complete enough to have caught a leak: it holds the
  // statements and the hashes sent as their parameters.
  assertStringIncludes(log, "delete from");
  assertStringIncludes(log, hashCode(codes[0]!));
  assert(errors.length >= 6);
  const haystacks = [
    ["server log", log],
    ["rows", rows.join("\n")],
    ["console", console_.join("\n")],
    ...errors.map((e, i) => [`error ${i}`, errorTexts(e).join("\n")]),
  ] as const;
  let leaks = 0;
  for (const [where, text] of haystacks) {
    for (const c of codes) {
      if (text.includes(c)) {
        leaks++;
        console.error(`a plaintext code leaked into the ${where}`);
      }
    }
  }
  console.log(
    `secrets: ${codes.length} codes scanned for in ${log.length} bytes of ` +
      `server log, ${rows.length} rows, ${errors.length} errors and ` +
      `${console_.length} console lines: ${leaks} leaks`,
  );
  assertEquals(leaks, 0);
  assertFalse(console_.length > 0, "the module wrote to the console");
});
