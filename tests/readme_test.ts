/**
 * The README is short and true: its usage example is `examples/use.ts`, and
 * runs, with the command the README gives, against a fresh database; every
 * task, file and command it names exists.
 */

import { assert, assertEquals, assertLessOrEqual } from "@std/assert";
import { databaseUrl, testDatabase } from "./support/database.ts";

const root = new URL("../", import.meta.url);
const readme = await Deno.readTextFile(new URL("README.md", root));

Deno.test("the README is at most 12 KB", () => {
  assertLessOrEqual(new TextEncoder().encode(readme).length, 12 * 1024);
});

Deno.test("the README's usage example runs with the command it states, against a fresh database, and exits 0", async () => {
  const use = readme.slice(readme.indexOf("## Use"));
  const example = use.slice(use.indexOf("```ts\n") + 6, use.indexOf("```\n"));
  assertEquals(
    example,
    await Deno.readTextFile(new URL("examples/use.ts", root)),
    "examples/use.ts is the README's example",
  );
  const command = use.match(/`DATABASE_URL=\S+ deno run ([^`]*) main\.ts`/);
  assert(command, "the README states the command");
  const flags = command[1]!.split(" ");
  assertEquals(flags, ["--allow-net", "--allow-env"]);

  // A fresh database: a schema of its own, first on the search path.
  await using t = await testDatabase();
  await t.sql.unsafe(
    `drop table ${t.table}, ${t.table}_spent`,
  );
  const url = new URL(databaseUrl());
  url.searchParams.set("search_path", t.schema);
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, "examples/use.ts"],
    cwd: new URL(".", root),
    env: { DATABASE_URL: url.href },
  }).output();
  const [out, err] = [run.stdout, run.stderr].map((b) =>
    new TextDecoder().decode(b)
  );
  assertEquals(run.code, 0, err);
  assertEquals(out, "tokens for user-42\ninvalid_grant\n");
  const [{ n }] = await t.sql<[{ n: number }]>`
    select count(*)::int as n from information_schema.tables
    where table_schema = ${t.schema}
  `;
  assertEquals(n, 2, "it created its tables");
});

Deno.test("every task, file and CLI command the README names exists", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", root)),
  );
  for (const [, task] of readme.matchAll(/deno task (\w+)/g)) {
    assert(task! in config.tasks, `deno task ${task}`);
  }
  const paths = new Set(
    [...readme.matchAll(
      /\b((?:examples|tests|bench|src)\/[\w/.-]+\.(?:ts|md))/g,
    )]
      .map((match) => match[1]!),
  );
  for (const name of ["CHANGELOG.md", "LICENSE"]) {
    if (readme.includes(name)) paths.add(name);
  }
  assert(paths.size > 5);
  for (const path of paths) {
    assert((await Deno.stat(new URL(path, root))).isFile, path);
  }
  for (
    const [, entry] of readme.matchAll(
      /(?<!jsr\.io\/)@attesto\/code-store(\/[\w-]+)?/g,
    )
  ) {
    const key = entry ? `.${entry}` : ".";
    assert(key in config.exports, `export ${key}`);
  }
  // `.../cli migrate`, `code-store replication`: commands the CLI has.
  const commands = ["migrate", "purge", "stats", "replication"];
  const named = [...readme.matchAll(/(?:\/cli|code-store) ([a-z]+)\b(?!:)/g)]
    .map((match) => match[1]!);
  assert(named.length > 0);
  for (const command of named) {
    assert(commands.includes(command), `CLI command ${command}`);
  }
});
