/**
 * The postgres.js the tests, tools and benchmarks run on: 4.x by default,
 * 3.4 with `POSTGRES_MAJOR=3` (CI runs the suite on both). The examples
 * import `postgres` as a user would: the version the package depends on.
 *
 * @module
 */

import postgres4 from "postgres";
import postgres3 from "postgres3";

/** The major under test: 3 or 4. */
export const POSTGRES_MAJOR: 3 | 4 = Deno.env.get("POSTGRES_MAJOR") === "3"
  ? 3
  : 4;

/** A pool (typed as 4.x's, whichever major runs). */
export type Sql = postgres4.Sql;

/** A pool's options (typed as 4.x's, whichever major runs). */
export type Options = postgres4.Options<Record<string, postgres4.PostgresType>>;

/** `postgres()` of the major under test. */
const postgres: typeof postgres4 = POSTGRES_MAJOR === 3
  ? postgres3 as unknown as typeof postgres4
  : postgres4;

export default postgres;
