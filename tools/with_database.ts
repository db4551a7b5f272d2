/**
 * Runs a command with `DATABASE_URL` pointing at a PostgreSQL server: the
 * one already in `DATABASE_URL` if set, otherwise an embedded server started
 * for the run and stopped afterwards (also on SIGINT/SIGTERM).
 *
 * ```sh
 * deno run -A tools/with_database.ts deno test -A
 * ```
 *
 * @module
 */

import { databaseFromEnv } from "./embedded_postgres.ts";

const [command, ...args] = Deno.args;
if (!command) {
  console.error("usage: with_database.ts <command> [args...]");
  Deno.exit(2);
}

const started = performance.now();
const { url, server } = await databaseFromEnv();
console.error(
  server
    ? `Started an embedded PostgreSQL on port ${server.port} in ${
      Math.round(performance.now() - started)
    } ms.`
    : `Using DATABASE_URL (${redact(url)}).`,
);

const child = new Deno.Command(command === "deno" ? Deno.execPath() : command, {
  args,
  env: { DATABASE_URL: url },
  stdin: "inherit",
}).spawn();
const forward = (signal: Deno.Signal) => () => {
  try {
    child.kill(signal);
  } catch {
    // Already exited.
  }
};
const handlers = (["SIGINT", "SIGTERM"] as const).map((signal) => {
  const handler = forward(signal);
  Deno.addSignalListener(signal, handler);
  return [signal, handler] as const;
});
const { code } = await child.status;
for (const [signal, handler] of handlers) {
  Deno.removeSignalListener(signal, handler);
}
await server?.destroy();
Deno.exit(code);

function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.href;
  } catch {
    return "unparseable URL";
  }
}
