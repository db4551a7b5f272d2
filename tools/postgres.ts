/**
 * The postgres.js the tests, tools and benchmarks run on: 4.x by default,
 * 3.4 with `POSTGRES_MAJOR=3` (CI runs the suite on both). The examples
 * import `postgres` as a user would: the version the package depends on.
 *
 * @module
 */

import postgres4 from "postgres";
import postgres3 from "postgres3";
import config from "../deno.json" with { type: "json" };

/** The major under test: 3 or 4. */
export const POSTGRES_MAJOR: 3 | 4 = Deno.env.get("POSTGRES_MAJOR") === "3"
  ? 3
  : 4;

/** A pool (typed as 4.x's, whichever major runs). */
export type Sql = postgres4.Sql;

/** A pool's options (typed as 4.x's, whichever major runs). */
export type Options = postgres4.Options<Record<string, postgres4.PostgresType>>;

/** A postgres.js major, imported explicitly (not through `POSTGRES_MAJOR`). */
export interface Major {
  /** 3 or 4. */
  readonly major: 3 | 4;
  /** The exact version `deno.json` pins, such as `"4.2.0"`. */
  readonly version: string;
  /** Its `postgres()`. */
  readonly postgres: typeof postgres4;
}

/** The version a specifier such as `npm:postgres@4.2.0` pins. */
function pinned(spec: string): string {
  return spec.slice(spec.lastIndexOf("@") + 1);
}

/**
 * postgres.js 3.4 (`postgres3`, scoped to the repository in `deno.json`)
 * and 4.x (`postgres`, the library's own in `imports`).
 */
export const MAJORS: readonly Major[] = [
  {
    major: 3,
    version: pinned(config.scopes["./"].postgres3),
    postgres: postgres3 as unknown as typeof postgres4,
  },
  { major: 4, version: pinned(config.imports.postgres), postgres: postgres4 },
];

/** The major `n`. */
export function major(n: 3 | 4): Major {
  return MAJORS.find((m) => m.major === n)!;
}

/** `postgres()` of the major under test. */
const postgres: typeof postgres4 = major(POSTGRES_MAJOR).postgres;

export default postgres;
