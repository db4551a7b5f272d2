/**
 * Builds the package the way JSR publishes it for npm (`npx jsr add`): every
 * `.ts` file of `mod.ts` and `src/` transpiled on its own with esbuild (no
 * bundling, no Deno shim), relative `.ts` imports mapped to `.js`, and
 * `@std/crypto` mapped to its npm name `@jsr/std__crypto`. `postgres` stays
 * `postgres`. With jsr.io unreachable, `@std/crypto` comes from the local
 * registry (`JSR_URL`, or `../shared/jsr`), built the same way.
 *
 * The result is a folder with `node_modules/@attesto/code-store`,
 * `node_modules/@jsr/std__crypto` and `node_modules/postgres` (copied from
 * Deno's npm cache), for Node and Bun programs placed in it.
 *
 * ```sh
 * deno run -A tools/npm_package.ts /tmp/attesto-npm
 * ```
 *
 * @module
 */

import { transform } from "npm:esbuild@0.28.2";
import { dirname, join, relative } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { major, POSTGRES_MAJOR } from "./postgres.ts";

const ROOT = fromFileUrl(new URL("../", import.meta.url));

/** npm names of the JSR packages the library imports. */
const JSR_TO_NPM: Readonly<Record<string, string>> = {
  "@std/crypto": "@jsr/std__crypto",
};

/**
 * Transpiles one TypeScript module and rewrites its specifiers.
 *
 * @param source The module's text.
 * @param file Its path, for messages.
 * @returns The JavaScript module.
 */
async function transpile(source: string, file: string): Promise<string> {
  const { code } = await transform(source, {
    loader: "ts",
    format: "esm",
    target: "es2022",
    sourcefile: file,
    keepNames: true,
  });
  return code.replace(
    /(\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])([^"']+)\2/g,
    (whole, lead: string, quote: string, specifier: string) => {
      if (specifier.startsWith(".")) {
        return `${lead}${quote}${specifier.replace(/\.ts$/, ".js")}${quote}`;
      }
      for (const [jsr, npm] of Object.entries(JSR_TO_NPM)) {
        if (specifier === jsr || specifier.startsWith(`${jsr}/`)) {
          return `${lead}${quote}${npm}${specifier.slice(jsr.length)}${quote}`;
        }
      }
      return whole;
    },
  );
}

/** Transpiles every `.ts` file under `from` (recursively) into `to`. */
async function transpileTree(
  from: string,
  to: string,
  files: readonly string[],
): Promise<void> {
  for (const file of files) {
    const target = join(to, file.replace(/\.ts$/, ".js"));
    await Deno.mkdir(dirname(target), { recursive: true });
    const source = await Deno.readTextFile(join(from, file));
    await Deno.writeTextFile(target, await transpile(source, file));
  }
}

async function tsFiles(dir: string, prefix = ""): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(join(dir, prefix))) {
    const path = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) found.push(...await tsFiles(dir, path));
    else if (entry.name.endsWith(".ts")) found.push(path);
  }
  return found.sort();
}

/** `./foo.ts` export map entries as `./foo.js`. */
function jsExports(exports: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(exports).map(([key, path]) => [
      key,
      path.replace(/\.ts$/, ".js"),
    ]),
  );
}

/** A JSON file's value. */
async function readJson(path: string): Promise<unknown> {
  return JSON.parse(await Deno.readTextFile(path));
}

/** The local JSR registry's folder. */
function jsrRegistry(): string {
  const url = Deno.env.get("JSR_URL");
  if (url?.startsWith("file://")) return fromFileUrl(url);
  return join(ROOT, "..", "shared", "jsr");
}

/**
 * Builds the package and its dependencies into `out/node_modules`
 * (replacing `@attesto/code-store`, `@jsr/std__crypto` and `postgres`
 * there, and nothing else).
 *
 * @param out The folder to build into.
 * @returns The package's folder.
 */
export async function buildNpmPackage(out: string): Promise<string> {
  const modules = join(out, "node_modules");
  for (const name of ["@attesto/code-store", "@jsr/std__crypto", "postgres"]) {
    await Deno.remove(join(modules, name), { recursive: true }).catch(() => {});
  }
  const config = await readJson(join(ROOT, "deno.json")) as {
    name: string;
    version: string;
    exports: Record<string, string>;
    scopes: Record<string, Record<string, string>>;
  };

  // The package itself.
  const pkg = join(modules, ...config.name.split("/"));
  await transpileTree(ROOT, pkg, [
    "mod.ts",
    ...(await tsFiles(join(ROOT, "src"))).map((f) => `src/${f}`),
  ]);
  // The postgres.js under test (tools/postgres.ts): the package's own, or
  // 3.4 (`postgres3`) with POSTGRES_MAJOR=3.
  const postgres = POSTGRES_MAJOR === 3
    ? join(
      ROOT,
      "node_modules",
      ".deno",
      `postgres@${major(3).version}`,
      "node_modules",
      "postgres",
    )
    : join(ROOT, "node_modules", "postgres");
  const postgresVersion =
    (await readJson(join(postgres, "package.json")) as { version: string })
      .version;
  const cryptoDir = join(jsrRegistry(), "@std", "crypto");
  const cryptoMeta = await readJson(join(cryptoDir, "meta.json")) as {
    latest: string;
  };
  await Deno.writeTextFile(
    join(pkg, "package.json"),
    JSON.stringify(
      {
        name: config.name,
        version: config.version,
        type: "module",
        exports: jsExports(config.exports),
        dependencies: {
          "@jsr/std__crypto": `^${cryptoMeta.latest}`,
          postgres: `^${postgresVersion}`,
        },
      },
      null,
      2,
    ),
  );

  // @std/crypto, from the registry, built the same way.
  const version = join(cryptoDir, cryptoMeta.latest);
  const versionMeta = await readJson(
    join(cryptoDir, `${cryptoMeta.latest}_meta.json`),
  ) as { exports: Record<string, string> };
  const crypto = join(modules, "@jsr", "std__crypto");
  await transpileTree(version, crypto, await tsFiles(version));
  await Deno.writeTextFile(
    join(crypto, "package.json"),
    JSON.stringify({
      name: "@jsr/std__crypto",
      version: cryptoMeta.latest,
      type: "module",
      exports: jsExports(versionMeta.exports),
    }),
  );

  // postgres, as npm installs it (Deno's copy is the npm tarball's files).
  await copyTree(await Deno.realPath(postgres), join(modules, "postgres"));
  return pkg;
}

/**
 * Installs, with npm, the npm packages named in `names` into `out`, at the
 * versions `deno.json` maps them to for the repository's own files (its
 * `scopes["./"]`, then its `imports`): the servers the adapters are tested
 * with. Run it before {@linkcode buildNpmPackage}, which adds the package
 * beside them.
 *
 * @param out The folder.
 * @param names Import names, such as `"oidc-provider"`.
 */
export async function installNpmDependencies(
  out: string,
  names: readonly string[],
): Promise<void> {
  const config = await readJson(join(ROOT, "deno.json")) as {
    imports: Record<string, string>;
    scopes?: Record<string, Record<string, string>>;
  };
  const mapped = { ...config.imports, ...config.scopes?.["./"] };
  const dependencies: Record<string, string> = {};
  for (const name of names) {
    const specifier = mapped[name];
    const match = specifier?.match(/^npm:(@?[^@]+)@(.+)$/);
    if (!match) throw new Error(`deno.json maps no npm package ${name}`);
    dependencies[match[1]!] = match[2]!;
  }
  await Deno.writeTextFile(
    join(out, "package.json"),
    JSON.stringify({ private: true, type: "module", dependencies }),
  );
  const { code, stderr } = await new Deno.Command("npm", {
    args: ["install", "--no-audit", "--no-fund", "--loglevel=error"],
    cwd: out,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) {
    throw new Error(`npm install failed: ${new TextDecoder().decode(stderr)}`);
  }
}

/**
 * Transpiles files of this repository (examples, test programs) into `out`
 * at the same relative paths, `.ts` to `.js`, for Node and Bun to run
 * against the package in `out/node_modules`.
 *
 * @param out The folder.
 * @param files Paths relative to the repository's root.
 */
export async function transpileFiles(
  out: string,
  files: readonly string[],
): Promise<void> {
  await transpileTree(ROOT, out, files);
}

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    const source = join(from, entry.name);
    const target = join(to, entry.name);
    if (entry.isDirectory) await copyTree(source, target);
    else if (entry.isFile) await Deno.copyFile(source, target);
  }
}

if (import.meta.main) {
  const out = Deno.args[0];
  if (!out) {
    console.error("usage: npm_package.ts <folder>");
    Deno.exit(2);
  }
  const pkg = await buildNpmPackage(out);
  console.log(`built ${relative(Deno.cwd(), pkg) || pkg}`);
}
