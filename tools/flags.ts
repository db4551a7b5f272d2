/**
 * Numbers given on the command line of the bench, the profiler and the
 * soak test, read strictly: a wrong one ends the run before it starts,
 * never minutes later as `NaN`.
 *
 * @module
 */

/** What a numeric flag takes. */
export type FlagKind = "count" | "seconds" | "seconds or 0";

const RULES: Readonly<
  Record<FlagKind, { wanted: string; ok: (n: number) => boolean }>
> = {
  count: {
    wanted: "a whole number above 0",
    ok: (n) => Number.isInteger(n) && n > 0,
  },
  seconds: { wanted: "a number of seconds above 0", ok: (n) => n > 0 },
  "seconds or 0": {
    wanted: "a number of seconds, 0 or more",
    ok: (n) => n >= 0,
  },
};

/**
 * The number flag `--name` was given (`text`), or `fallback` where it was
 * not. Anything else than a `kind` prints what it takes and exits with
 * code 2.
 */
export function numberFlag(
  name: string,
  text: string | undefined,
  fallback: number,
  kind: FlagKind,
): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  const { wanted, ok } = RULES[kind];
  if (text.trim() === "" || !Number.isFinite(value) || !ok(value)) {
    console.error(`--${name} takes ${wanted}, not ${JSON.stringify(text)}`);
    Deno.exit(2);
  }
  return value;
}
