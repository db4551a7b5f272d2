/**
 * The command lines of the bench, the profiler and the soak test, read
 * strictly: a wrong flag ends the run before it starts, with one line
 * saying what it takes and exit code 2, never minutes later as `NaN` or
 * as a stack trace.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** Prints `message` and ends the process with exit code 2 (a usage error). */
export function refuse(message: string): never {
  console.error(message);
  Deno.exit(2);
}

/**
 * `parseArgs` over `args` with `options`, strict: an unknown flag, or one
 * missing its value, is refused (see {@linkcode refuse}) rather than thrown.
 */
export function readFlags<const T extends ParseArgsConfig["options"]>(
  args: string[],
  options: T,
): ReturnType<typeof parseArgs<{ options: T; args: string[] }>>["values"] {
  try {
    return parseArgs({ args, options }).values;
  } catch (error) {
    refuse(error instanceof Error ? error.message : String(error));
  }
}

/**
 * The flag `--name` given as `text`, which must be one of `choices`, or
 * `undefined` where it was not given.
 */
export function choiceFlag<C extends string>(
  name: string,
  text: string | undefined,
  choices: readonly C[],
): C | undefined {
  if (text === undefined) return undefined;
  if (!(choices as readonly string[]).includes(text)) {
    refuse(
      `--${name} takes ${choices.join(" or ")}, not ${JSON.stringify(text)}`,
    );
  }
  return text as C;
}

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
    refuse(`--${name} takes ${wanted}, not ${JSON.stringify(text)}`);
  }
  return value;
}
