/**
 * What the published package depends on. `deno.json` keeps two maps:
 *
 * - `imports`: the packages the published modules (`mod.ts`, `src/`)
 *   import, and nothing else. Every Deno command in the repository fetches
 *   them first (`deno task demo` in a fresh clone fetches only these, then
 *   this platform's PostgreSQL binaries).
 * - `scopes["./"]`: everything the tests, examples, benchmarks and tools
 *   import. Deno fetches one of these only when a file that imports it runs
 *   or is checked.
 *
 * A name mapped in both resolves to the scope's entry in every file of the
 * repository, `src/` included, and would be published with that version:
 * so a test-only version of a library package goes in `scopes["./tests/"]`.
 */

import { assertEquals } from "@std/assert";

const ROOT = new URL("../", import.meta.url);

interface DenoJson {
  readonly exports: Record<string, string>;
  readonly imports: Record<string, string>;
}

interface Dependency {
  readonly specifier: string;
  readonly code?: { readonly specifier: string };
  readonly type?: { readonly specifier: string };
}

/** `jsr:/@std/crypto@^1.1.0/crypto` → `jsr:@std/crypto@^1.1.0`. */
function packageOf(specifier: string): string {
  const match = specifier.match(/^(npm|jsr):\/?((?:@[^/]+\/)?[^/@]+@[^/]+)/);
  return match ? `${match[1]}:${match[2]}` : specifier;
}

/** The packages the modules reachable from `entry` import, by resolved specifier. */
async function packagesImportedFrom(entry: string): Promise<Set<string>> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  if (code !== 0) throw new Error(`deno info ${entry}: ${decode(stderr)}`);
  const graph = JSON.parse(decode(stdout)) as {
    modules: { specifier: string; dependencies?: Dependency[] }[];
  };
  const found = new Set<string>();
  for (const module of graph.modules) {
    if (!module.specifier.startsWith(ROOT.href)) continue;
    for (const dependency of module.dependencies ?? []) {
      const resolved = dependency.code?.specifier ??
        dependency.type?.specifier;
      if (resolved?.startsWith("npm:") || resolved?.startsWith("jsr:")) {
        found.add(packageOf(resolved));
      }
    }
  }
  return found;
}

Deno.test("the published modules import exactly the packages deno.json's `imports` maps, at those versions", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  ) as DenoJson;
  const imported = new Set<string>();
  for (const path of Object.values(config.exports)) {
    for (const name of await packagesImportedFrom(path)) imported.add(name);
  }
  assertEquals(
    [...imported].sort(),
    Object.values(config.imports).sort(),
    "`imports` maps what mod.ts and src/ import, no more (a package of the " +
      "tests, examples, bench or tools goes in scopes), and scopes must not " +
      "remap it for src/",
  );
});
