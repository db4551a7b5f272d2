/**
 * The command line, run as a process the way scripts run it: with only the
 * network and environment permissions, and only the given database
 * settings in its environment.
 *
 * @module
 */

const CLI = new URL("../../src/cli.ts", import.meta.url).pathname;

/** What the CLI did. */
export interface CliRun {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/**
 * Runs `src/cli.ts` with `--allow-net --allow-env` only: it must touch no
 * file.
 *
 * @param args The command line.
 * @param env The database settings (`DATABASE_URL` or `PG*`).
 */
export async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<CliRun> {
  const keep = ["HOME", "PATH", "DENO_DIR", "JSR_URL", "XDG_CACHE_HOME"];
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", CLI, ...args],
    clearEnv: true,
    env: {
      ...Object.fromEntries(
        keep.flatMap((k) => {
          const v = Deno.env.get(k);
          return v === undefined ? [] : [[k, v]];
        }),
      ),
      NO_COLOR: "1",
      ...env,
    },
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code, out: decode(stdout), err: decode(stderr) };
}
