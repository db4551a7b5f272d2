/**
 * A PgBouncer in transaction pooling mode in front of a PostgreSQL server,
 * for tests. Needs the `pgbouncer` binary (Debian package `pgbouncer`);
 * {@linkcode pgbouncerPath} is `undefined` where it is not installed.
 *
 * @module
 */

import { join } from "node:path";

/** The `pgbouncer` binary, if installed. */
export const pgbouncerPath: string | undefined = [
  "/usr/sbin/pgbouncer",
  "/usr/bin/pgbouncer",
  "/usr/local/bin/pgbouncer",
  "/opt/homebrew/bin/pgbouncer",
].find((path) => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
});

/** A running PgBouncer. */
export interface PgBouncer extends AsyncDisposable {
  /** A connection string to the same database, through PgBouncer. */
  readonly url: string;
  /** What PgBouncer has logged so far. */
  log(): string;
}

/**
 * Starts PgBouncer in front of `serverUrl`, in `transaction` (default) or
 * `session` pool mode. As root it drops to the `postgres` user (`-u`), as
 * PgBouncer requires.
 */
export async function startPgBouncer(
  serverUrl: string,
  mode: "transaction" | "session" = "transaction",
): Promise<PgBouncer> {
  if (!pgbouncerPath) throw new Error("pgbouncer is not installed");
  const server = new URL(serverUrl);
  const database = decodeURIComponent(server.pathname.slice(1)) || "postgres";
  const user = decodeURIComponent(server.username) || "postgres";
  const dir = await Deno.makeTempDir({ prefix: "attesto-pgbouncer-" });
  await Deno.chmod(dir, 0o755);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const config = join(dir, "pgbouncer.ini");
  await Deno.writeTextFile(
    config,
    `[databases]
${database} = host=${server.hostname} port=${
      server.port || 5432
    } dbname=${database} user=${user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = any
pool_mode = ${mode}
max_client_conn = 1000
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
`,
  );
  await Deno.chmod(config, 0o644);
  const child = new Deno.Command(pgbouncerPath, {
    args: Deno.uid() === 0 ? ["-u", "postgres", config] : [config],
    cwd: dir,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const pump = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (text) => void (log += text) }),
  ).catch(() => {});
  let exited = false;
  child.status.then(() => exited = true);
  // Ready once it accepts TCP connections.
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (exited || Date.now() > deadline) {
        try {
          child.kill();
        } catch { /* exited */ }
        await child.status;
        await pump;
        await Deno.remove(dir, { recursive: true });
        throw new Error(`pgbouncer did not start:\n${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return {
    url: `postgres://${user}@127.0.0.1:${port}/${database}`,
    log: () => log,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGINT");
      } catch { /* exited */ }
      await child.status;
      await pump;
      await Deno.remove(dir, { recursive: true });
    },
  };
}
