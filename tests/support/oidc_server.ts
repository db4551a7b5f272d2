/**
 * oidc-provider (`examples/oidc_provider.ts`) as a process, for the tests;
 * it runs on Deno, and on Node and Bun from the package as JSR builds it.
 * Configured by its environment:
 *
 * - `DATABASE_URL` (its `search_path` holds the tables), `MODE`: `store`
 *   (codes in the code store), `control` (codes in the plain PostgreSQL
 *   adapter) or `memory` (oidc-provider's in-memory adapter);
 * - `PKCE`: `required` (default) or `optional`; `REVOKE`: `default` or
 *   `never` (oidc-provider's `revokeGrantPolicy`).
 *
 * Prints `{"port":n}` once it listens. `GET /_wins` answers how many
 * `take`s found their code in this process.
 *
 * @module
 */

import {
  createServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import process from "node:process";
import postgres from "postgres";
import { type CodeStore, createCodeStore } from "@attesto/code-store";
import { oidcProvider } from "../../examples/oidc_provider.ts";

const env = (name: string) => process.env[name];
const mode = env("MODE") ?? "store";
const sql = postgres(env("DATABASE_URL")!, {
  max: 8,
  fetch_types: false,
  onnotice: () => {},
});
let wins = 0;
const store = createCodeStore(sql);
const counted: CodeStore = {
  ...store,
  async take(code) {
    const entry = await store.take(code);
    if (entry) wins++;
    return entry;
  },
};
// The issuer needs the port: listen first, then build the provider.
let handler: (req: IncomingMessage, res: ServerResponse) => void = (
  _req,
  res,
) => res.writeHead(503).end();
const server = createServer((req, res) => {
  if (req.url === "/_wins") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ wins }));
  } else {
    handler(req, res);
  }
}).listen(0, "127.0.0.1", () => {
  const { port } = server.address() as { port: number };
  handler = oidcProvider({
    issuer: `http://127.0.0.1:${port}`,
    sql,
    store: mode === "store" ? counted : undefined,
    memory: mode === "memory",
    pkceRequired: env("PKCE") !== "optional",
    revokeGrantOnReplay: env("REVOKE") !== "never",
  }).handler;
  console.log(JSON.stringify({ port }));
});
process.once("SIGTERM", () => {
  server.close();
  server.closeAllConnections();
  sql.end({ timeout: 1 }).finally(() => process.exit(0));
});
