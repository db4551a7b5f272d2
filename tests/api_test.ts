/**
 * One API shape across every entry point: factories are `create*`, every
 * error class is of the `CodeStoreError` family with a stable `code`, a
 * `name` equal to its class and a message in words.
 */

import { assert, assertEquals, assertInstanceOf } from "@std/assert";
import * as root from "../mod.ts";
import * as memory from "../src/memory_store.ts";
import * as cli from "../src/cli.ts";
import * as oidcProvider from "../src/adapters/oidc_provider.ts";
import * as openauth from "../src/adapters/openauth.ts";
import * as tsOAuth2Server from "../src/adapters/ts_oauth2_server.ts";
import * as nodeOAuth2Server from "../src/adapters/node_oauth2_server.ts";
import * as mcp from "../src/adapters/mcp.ts";

const ENTRY_POINTS: Record<string, Record<string, unknown>> = {
  "@attesto/code-store": root,
  "/memory": memory,
  "/cli": cli,
  "/oidc-provider": oidcProvider,
  "/openauth": openauth,
  "/ts-oauth2-server": tsOAuth2Server,
  "/node-oauth2-server": nodeOAuth2Server,
  "/mcp": mcp,
};

/** Functions that are not factories, each named for what it does. */
const OPERATIONS = new Set([
  "hashCode",
  "fromRecord",
  "toRecord",
  "migrate",
  "migrationSql",
  "purgeExpired",
  "main",
]);

/** Published names kept as `@deprecated` aliases, and what replaces them. */
const DEPRECATED: Record<string, string> = {
  codeStoreModel: "createCodeStoreModel",
};

/** An instance of each error class, made as the store makes it. */
const ERRORS: Record<string, () => root.CodeStoreError> = {
  CodeStoreError: () => new root.CodeStoreError("ERR_X", "something failed"),
  DuplicateCodeError: () => new root.DuplicateCodeError(),
  InvalidRecordError: () =>
    new root.InvalidRecordError("data.scope", "must be an array"),
  MissingRepositoryError: () =>
    new root.MissingRepositoryError("returned undefined"),
  OperationTimeoutError: () =>
    new root.OperationTimeoutError("take", 5000, true),
  PkceRequiredError: () => new root.PkceRequiredError(),
  InvalidAuthorizationCodeError: () => new root.InvalidAuthorizationCodeError(),
  DatabaseError: () => new root.DatabaseError("take", "42P01", true),
  DatabaseUnavailableError: () =>
    new root.DatabaseUnavailableError("put", "ECONNREFUSED", false),
};

function isErrorClass(value: unknown): value is typeof Error {
  return typeof value === "function" &&
    (value === Error || value.prototype instanceof Error);
}

Deno.test("every exported function is a `create*` factory, an operation named for what it does, or a deprecated alias of a factory", () => {
  for (const [entry, exports] of Object.entries(ENTRY_POINTS)) {
    for (const [name, value] of Object.entries(exports)) {
      if (typeof value !== "function" || isErrorClass(value)) continue;
      if (name in DEPRECATED) {
        const replacement = exports[DEPRECATED[name]!];
        assertEquals(typeof replacement, "function", `${entry}: ${name}`);
        continue;
      }
      assert(
        /^create[A-Z]/.test(name) || OPERATIONS.has(name),
        `${entry} exports ${name}, neither create* nor a known operation`,
      );
    }
  }
});

Deno.test("every exported error class is a CodeStoreError with a stable code, its class name and a message in words", () => {
  const seen = new Set<string>();
  for (const [entry, exports] of Object.entries(ENTRY_POINTS)) {
    for (const [name, value] of Object.entries(exports)) {
      if (!isErrorClass(value)) continue;
      seen.add(name);
      const make = ERRORS[name];
      assert(make, `${entry} exports ${name}, which this test does not know`);
      const error = make();
      assertInstanceOf(error, value);
      assertInstanceOf(error, root.CodeStoreError);
      assertEquals(error.name, name);
      assert(/^ERR_[A-Z_]+$/.test(error.code), `${name}: ${error.code}`);
      if (name !== "CodeStoreError") {
        assertEquals((value as unknown as { code: string }).code, error.code);
      }
      // Words, not an OAuth error code such as "invalid_request".
      assert(
        error.message.includes(" ") && !/^[a-z_]+$/.test(error.message),
        `${name}: ${error.message}`,
      );
    }
  }
  assertEquals([...seen].sort(), Object.keys(ERRORS).sort());
});
