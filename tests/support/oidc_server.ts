/**
 * oidc-provider (`examples/oidc_provider.ts`) as a process, for the tests.
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

import { createServer } from "node:http";
import postgres from "postgres";
import { type CodeStore, createCodeStore } from "../../mod.ts";
import { oidcProvider } from "../../examples/oidc_provider.ts";

const env = (name: string) => Deno.env.get(name);
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
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const port = listener.addr.port;
listener.close();
const { handler } = oidcProvider({
  issuer: `http://127.0.0.1:${port}`,
  sql,
  store: mode === "store" ? counted : undefined,
  memory: mode === "memory",
  pkceRequired: env("PKCE") !== "optional",
  revokeGrantOnReplay: env("REVOKE") !== "never",
});
createServer((req, res) => {
  if (req.url === "/_wins") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ wins }));
  } else {
    handler(req, res);
  }
}).listen(port, "127.0.0.1", () => console.log(JSON.stringify({ port })));
