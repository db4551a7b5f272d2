/**
 * A real high-availability PostgreSQL cluster for tests: pg_auto_failover
 * (Debian packages `pg-auto-failover-cli` and `postgresql-15-auto-failover`)
 * with a monitor and two PostgreSQL nodes on 127.0.0.1, synchronous
 * replication (its default with two data nodes) and automated failover.
 *
 * - As root, every process runs as the `postgres` user, as PostgreSQL
 *   requires; each keeper runs in a session of its own, so a "crash" kills
 *   the keeper and its postmaster together (`kill -9` of the group).
 * - The monitor's health checks are tightened so that a failover takes a few
 *   seconds instead of about fifty: see {@linkcode FAST_FAILOVER}.
 * - Every process is stopped on dispose, on SIGINT/SIGTERM, and (killed)
 *   when the test process unloads.
 *
 * {@linkcode haSupport} is `undefined` where pg_auto_failover is missing, and
 * the tests skip with a warning.
 *
 * @module
 */

import postgres, { type Sql } from "../../tools/postgres.ts";
import { until } from "./database.ts";

/** Where pg_auto_failover and the PostgreSQL it runs live, if installed. */
export const haSupport: { autoctl: string; bin: string } | undefined = (() => {
  const autoctl = ["/usr/bin/pg_autoctl", "/usr/local/bin/pg_autoctl"].find(
    exists,
  );
  if (!autoctl) return undefined;
  for (const version of ["18", "17", "16", "15", "14", "13"]) {
    const lib = `/usr/lib/postgresql/${version}/lib/pgautofailover.so`;
    if (exists(lib)) {
      return { autoctl, bin: `/usr/lib/postgresql/${version}/bin` };
    }
  }
  return undefined;
})();

/**
 * The monitor settings the tests use (defaults in parentheses): a node is
 * checked every 0.5 s (5 s), considered unhealthy after 1 s (20 s), and a
 * primary that lost the monitor demotes itself after 2 s (30 s).
 */
export const FAST_FAILOVER = {
  "pgautofailover.health_check_period": 500,
  "pgautofailover.health_check_timeout": 500,
  "pgautofailover.health_check_max_retries": 1,
  "pgautofailover.health_check_retry_delay": 200,
  "pgautofailover.node_considered_unhealthy_timeout": 1000,
  "pgautofailover.primary_demote_timeout": 2000,
  "pgautofailover.startup_grace_period": 1000,
} as const;

/** One data node. */
export interface HaNode {
  readonly name: string;
  readonly port: number;
  /** A connection string to this node alone. */
  readonly url: string;
}

interface RunAs {
  readonly uid: number;
  readonly gid: number;
}

const live = new Set<HaCluster>();
let handlersInstalled = false;

/** A running pg_auto_failover formation: a monitor and two nodes. */
export class HaCluster implements AsyncDisposable {
  /** `node1` and `node2`. */
  readonly nodes: readonly [HaNode, HaNode];
  /**
   * The URL clients use: both nodes, and `target_session_attrs=primary` (not
   * `read-write`: postgres.js takes a hot standby for read-write).
   */
  readonly url: string;

  #base: string;
  #runAs: RunAs | undefined;
  #monitorPort: number;
  #keepers = new Map<string, Deno.ChildProcess>();
  /** Processes stopped by {@linkcode holdReplication}, per node. */
  #held = new Map<string, number[]>();
  #logs: Promise<void>[] = [];
  #monitor: Sql;

  private constructor(base: string, runAs: RunAs | undefined) {
    this.#base = base;
    this.#runAs = runAs;
    const [monitor, a, b] = [freePort(), freePort(), freePort()];
    this.#monitorPort = monitor;
    const node = (name: string, port: number): HaNode => ({
      name,
      port,
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    });
    this.nodes = [node("node1", a), node("node2", b)];
    this.url = `postgres://postgres@127.0.0.1:${a},127.0.0.1:${b}/postgres` +
      "?target_session_attrs=primary";
    this.#monitor = postgres(
      `postgres://postgres@127.0.0.1:${monitor}/pg_auto_failover`,
      { max: 1, onnotice: () => {}, connect_timeout: 2, backoff: false },
    );
  }

  /**
   * Creates the monitor and both nodes and waits until node1 is the primary
   * and node2 its synchronous secondary (about 15 seconds).
   */
  static async create(): Promise<HaCluster> {
    if (!haSupport) throw new Error("pg_auto_failover is not installed");
    const runAs = await unprivilegedUser();
    const base = await Deno.makeTempDir({ prefix: "attesto-ha-" });
    if (runAs) {
      await Deno.chmod(base, 0o755);
      await Deno.chown(base, runAs.uid, runAs.gid);
    }
    const cluster = new HaCluster(base, runAs);
    live.add(cluster);
    installSignalHandlers();
    try {
      await cluster.#start();
      return cluster;
    } catch (error) {
      const logs = await cluster.logs();
      await cluster[Symbol.asyncDispose]();
      throw new Error(`the HA cluster did not start: ${error}\n${logs}`);
    }
  }

  async #start(): Promise<void> {
    await this.#run("mkdir", ["-p", `${this.#base}/sock`]);
    for (const dir of ["monitor", "node1"]) await this.#initdb(dir);
    this.#keeper("monitor", [
      "create",
      "monitor",
      "--pgdata",
      `${this.#base}/monitor`,
      "--pgport",
      String(this.#monitorPort),
      ...this.#common(),
    ]);
    await until(
      async () => {
        await this.#monitor`select 1`;
        return true;
      },
      30_000,
      "the monitor accepts connections",
    );
    for (const [name, value] of Object.entries(FAST_FAILOVER)) {
      await this.#monitor.unsafe(`alter system set ${name} = ${value}`);
    }
    await this.#monitor`select pg_reload_conf()`;
    this.#createNode(this.nodes[0]);
    await this.waitFor({ node1: "single" }, 30_000);
    this.#createNode(this.nodes[1]);
    // pg_basebackup waits for a spread checkpoint; ask for it at once. A
    // base backup that found one under way may already have finished: the
    // node is then a secondary before this poll sees it catch up.
    await this.waitFor(
      { node2: ["wait_standby", "catchingup", "secondary"] },
      30_000,
    );
    await this.#sql(this.nodes[0], (sql) => sql`checkpoint`);
    await this.waitFor({ node1: "primary", node2: "secondary" }, 60_000);
  }

  #common(): string[] {
    return [
      "--hostname",
      "127.0.0.1",
      "--auth",
      "trust",
      "--no-ssl",
      "--pgctl",
      `${haSupport!.bin}/pg_ctl`,
      "--run",
    ];
  }

  #createNode(node: HaNode): void {
    this.#keeper(node.name, [
      "create",
      "postgres",
      "--pgdata",
      `${this.#base}/${node.name}`,
      "--pgport",
      String(node.port),
      "--name",
      node.name,
      "--monitor",
      `postgres://autoctl_node@127.0.0.1:${this.#monitorPort}/pg_auto_failover?sslmode=disable`,
      "--pg-hba-lan",
      ...this.#common(),
    ]);
  }

  /** A data directory with small settings (pg_auto_failover tunes for the whole machine). */
  async #initdb(name: string): Promise<void> {
    const data = `${this.#base}/${name}`;
    await this.#run(`${haSupport!.bin}/initdb`, [
      "--pgdata",
      data,
      "--auth",
      "trust",
      "--username",
      "postgres",
      "--no-sync",
      "--no-instructions",
    ]);
    const settings = `
unix_socket_directories = '${this.#base}/sock'
shared_buffers = '32MB'
work_mem = '4MB'
maintenance_work_mem = '32MB'
effective_cache_size = '256MB'
max_connections = 200
fsync = on
`;
    // postgresql.conf includes pg_auto_failover's file at its top, so these
    // lines, after it, win.
    await this.#run("sh", [
      "-c",
      `cat >> '${data}/postgresql.conf'`,
    ], settings);
  }

  #env(): Record<string, string> {
    return {
      HOME: this.#base,
      XDG_CONFIG_HOME: `${this.#base}/config`,
      XDG_DATA_HOME: `${this.#base}/data`,
      XDG_RUNTIME_DIR: `${this.#base}/run`,
      PGHOST: `${this.#base}/sock`,
      PATH: `${haSupport!.bin}:/usr/bin:/bin`,
      LC_ALL: "C.UTF-8",
    };
  }

  /** Starts `pg_autoctl <args>` as a keeper in a session of its own. */
  #keeper(name: string, args: string[]): void {
    const child = new Deno.Command("setsid", {
      args: [haSupport!.autoctl, ...args],
      env: this.#env(),
      clearEnv: true,
      cwd: this.#base,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      ...this.#runAs,
    }).spawn();
    this.#keepers.set(name, child);
    const log = `${this.#base}/${name}.log`;
    for (const stream of [child.stdout, child.stderr]) {
      this.#logs.push(
        Deno.open(log, { append: true, create: true }).then((file) =>
          stream.pipeTo(file.writable)
        ).catch(() => {}),
      );
    }
  }

  async #run(command: string, args: string[], stdin?: string): Promise<void> {
    const child = new Deno.Command(command, {
      args,
      env: this.#env(),
      clearEnv: true,
      cwd: this.#base,
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      ...this.#runAs,
    }).spawn();
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(stdin));
      await writer.close();
    }
    const { code, stderr } = await child.output();
    if (code !== 0) {
      throw new Error(
        `${command} ${args.join(" ")} failed (${code}): ${
          new TextDecoder().decode(stderr)
        }`,
      );
    }
  }

  async #sql<T>(
    node: HaNode,
    fn: (sql: Sql) => Promise<T>,
  ): Promise<T> {
    const sql = postgres(node.url, {
      max: 1,
      onnotice: () => {},
      connect_timeout: 2,
      backoff: false,
      fetch_types: false,
    });
    try {
      return await fn(sql);
    } finally {
      await sql.end({ timeout: 1 });
    }
  }

  /** Runs `fn` on a one-connection pool to `node`. */
  on<T>(node: HaNode, fn: (sql: Sql) => Promise<T>): Promise<T> {
    return this.#sql(node, fn);
  }

  /** The nodes' states as the monitor reports them: `{ node1: "primary/primary" }`. */
  async states(): Promise<Record<string, string>> {
    const rows = await this.#monitor<
      { name: string; reported: string; goal: string }[]
    >`
      select nodename as name, reportedstate::text as reported,
        goalstate::text as goal
      from pgautofailover.node order by nodeid
    `;
    return Object.fromEntries(
      rows.map((r) => [r.name, `${r.reported}/${r.goal}`]),
    );
  }

  /**
   * Waits until each named node has reached (reported and been assigned) one
   * of the given states.
   */
  async waitFor(
    wanted: Record<string, string | string[]>,
    timeout = 30_000,
  ): Promise<void> {
    await until(
      async () => {
        const states = await this.states();
        return Object.entries(wanted).every(([name, want]) =>
          [want].flat().some((state) => states[name] === `${state}/${state}`)
        );
      },
      timeout,
      `nodes in ${JSON.stringify(wanted)}`,
      () => this.states(),
    );
  }

  /** The node the monitor has as primary, if any. */
  async primary(): Promise<HaNode | undefined> {
    const states = await this.states();
    return this.nodes.find((node) =>
      ["primary", "wait_primary", "single"].some((s) =>
        states[node.name]?.startsWith(`${s}/`)
      )
    );
  }

  /** The other node. */
  other(node: HaNode): HaNode {
    return this.nodes[0] === node ? this.nodes[1] : this.nodes[0];
  }

  /**
   * Crashes `node`: `kill -9` of its keeper and postmaster together. Its
   * backends exit when they notice the postmaster is gone.
   */
  async kill(node: HaNode): Promise<void> {
    // A stopped process would never notice its postmaster died.
    for (const pid of this.#held.get(node.name) ?? []) {
      signalPid(pid, "SIGKILL");
    }
    this.#held.delete(node.name);
    const keeper = this.#keepers.get(node.name);
    if (keeper) {
      signalGroup(keeper.pid, "SIGKILL");
      await keeper.status;
      this.#keepers.delete(node.name);
    }
    const pid = await this.#postmasterPid(node.name);
    if (pid) signalPid(pid, "SIGKILL");
  }

  /** Restarts the keeper of a killed node; it rejoins as a secondary. */
  rejoin(node: HaNode): void {
    this.#keeper(node.name, [
      "run",
      "--pgdata",
      `${this.#base}/${node.name}`,
    ]);
  }

  /** Runs `pg_autoctl set node replication-quorum <value>` for `node`. */
  async setReplicationQuorum(node: HaNode, value: boolean): Promise<void> {
    await this.#run(haSupport!.autoctl, [
      "set",
      "node",
      "replication-quorum",
      "--pgdata",
      `${this.#base}/${node.name}`,
      String(value),
    ]);
  }

  /**
   * Stops (SIGSTOP) or resumes (SIGCONT) the WAL receiver of a standby or
   * the WAL senders of a primary: replication stalls while the servers
   * stay up and healthy for the monitor.
   */
  async holdReplication(node: HaNode, hold: boolean): Promise<void> {
    if (!hold) {
      for (const pid of this.#held.get(node.name) ?? []) {
        signalPid(pid, "SIGCONT");
      }
      this.#held.delete(node.name);
      return;
    }
    const pids = await this.#sql(node, async (sql) => {
      const rows = await sql<{ pid: number }[]>`
        select pid from pg_stat_wal_receiver
        union all select pid from pg_stat_replication
      `;
      return rows.map((r) => r.pid);
    });
    if (pids.length === 0) throw new Error(`no replication on ${node.name}`);
    this.#held.set(node.name, pids);
    for (const pid of pids) signalPid(pid, "SIGSTOP");
  }

  async #postmasterPid(name: string): Promise<number | undefined> {
    try {
      const text = await Deno.readTextFile(
        `${this.#base}/${name}/postmaster.pid`,
      );
      const pid = Number(text.split("\n")[0]);
      return pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** The keepers' logs, for a failure message. */
  async logs(): Promise<string> {
    const parts: string[] = [];
    for (const name of ["monitor", "node1", "node2"]) {
      const text = await Deno.readTextFile(`${this.#base}/${name}.log`).catch(
        () => "",
      );
      parts.push(`--- ${name}\n${text.split("\n").slice(-25).join("\n")}`);
    }
    return parts.join("\n");
  }

  /** Stops everything and removes the directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#monitor.end({ timeout: 1 }).catch(() => {});
    for (const pids of this.#held.values()) {
      for (const pid of pids) signalPid(pid, "SIGCONT");
    }
    this.#held.clear();
    // An immediate shutdown of each postmaster (it cleans up its shared
    // memory), then the keepers, so that none restarts it.
    const postmasters: number[] = [];
    for (const name of ["node1", "node2", "monitor"]) {
      const pid = await this.#postmasterPid(name);
      if (pid) {
        postmasters.push(pid);
        signalPid(pid, "SIGQUIT");
      }
    }
    for (const keeper of this.#keepers.values()) {
      signalGroup(keeper.pid, "SIGKILL");
    }
    await until(
      () => Promise.resolve(postmasters.every((pid) => !alive(pid))),
      10_000,
      "the postmasters to exit",
    ).catch(() => {});
    this.killSync();
    // The keepers' output pipes close once every process holding them has
    // exited; never wait long for that.
    await Promise.race([Promise.allSettled(this.#logs), delay(2000)]);
  }

  /**
   * Kills every process of the cluster (`kill -9`) and removes its
   * directory, synchronously: the last resort on a signal or at exit.
   */
  killSync(): void {
    live.delete(this);
    for (const pids of this.#held.values()) {
      for (const pid of pids) signalPid(pid, "SIGKILL");
    }
    for (const keeper of this.#keepers.values()) {
      signalGroup(keeper.pid, "SIGKILL");
    }
    this.#keepers.clear();
    for (const name of ["node1", "node2", "monitor"]) {
      try {
        const text = Deno.readTextFileSync(
          `${this.#base}/${name}/postmaster.pid`,
        );
        signalPid(Number(text.split("\n")[0]), "SIGKILL");
      } catch {
        // Not running.
      }
    }
    try {
      Deno.removeSync(this.#base, { recursive: true });
    } catch {
      // Half-removed by a process still exiting.
    }
  }
}

function installSignalHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  for (const [name, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    Deno.addSignalListener(name, () => {
      for (const cluster of [...live]) cluster.killSync();
      Deno.exit(code);
    });
  }
  globalThis.addEventListener("unload", () => {
    for (const cluster of [...live]) cluster.killSync();
  });
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Whether `pid` runs (a zombie, exited but not reaped, does not). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !==
      "Z";
  } catch {
    return false;
  }
}

function signalPid(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

function signalGroup(pid: number, signal: Deno.Signal): void {
  signalPid(-pid, signal);
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

async function unprivilegedUser(): Promise<RunAs | undefined> {
  if (Deno.uid() !== 0) return undefined;
  const id = async (flag: string) => {
    const { stdout } = await new Deno.Command("id", {
      args: [flag, "postgres"],
    }).output();
    return Number(new TextDecoder().decode(stdout).trim());
  };
  const uid = await id("-u");
  if (!(uid > 0)) throw new Error("running as root without a postgres user");
  return { uid, gid: await id("-g") };
}
