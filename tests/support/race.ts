/**
 * Races `take()` across OS processes: spawns `race_worker.ts` processes,
 * waits until each has its pools open, starts them at once and gathers
 * what each one won.
 *
 * @module
 */

import { databaseUrl } from "./database.ts";

/** What one process reported. */
export interface WorkerResult {
  /** The entries it won, by code. */
  readonly won: Record<string, unknown>;
  /** How many of its takes returned null. */
  readonly nulls: number;
  /** The errors its takes raised. */
  readonly errors: string[];
}

/** Options for {@linkcode raceProcesses}. */
export interface ProcessRace {
  /** The table to take from. */
  readonly table: string;
  /** The codes, each raced by every process. */
  readonly codes: readonly string[];
  /** How many processes. */
  readonly processes: number;
  /** How many pools in each process. */
  readonly pools: number;
  /** How many concurrent takes of each code in each process. */
  readonly racers: number;
}

const WORKER = new URL("./race_worker.ts", import.meta.url).pathname;

/** Runs the race and returns each process's result. */
export async function raceProcesses(
  race: ProcessRace,
): Promise<WorkerResult[]> {
  const children = Array.from(
    { length: race.processes },
    () =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          WORKER,
          race.table,
          String(race.pools),
          String(race.racers),
          ...race.codes,
        ],
        env: { DATABASE_URL: databaseUrl() },
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
      }).spawn(),
  );
  const lines = children.map((child) => lineReader(child.stdout));
  try {
    for (const next of lines) {
      const line = await next();
      if (line !== "ready") throw new Error(`worker said ${line}`);
    }
    // Every process is connected: start them together.
    await Promise.all(children.map(async (child) => {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
    }));
    const results = await Promise.all(
      lines.map(async (next) => JSON.parse(await next()) as WorkerResult),
    );
    const statuses = await Promise.all(children.map((child) => child.status));
    for (const status of statuses) {
      if (!status.success) throw new Error(`worker exited with ${status.code}`);
    }
    return results;
  } catch (error) {
    for (const child of children) {
      try {
        child.kill();
      } catch {
        // Already exited.
      }
    }
    await Promise.allSettled(children.map((child) => child.status));
    throw error;
  } finally {
    await Promise.allSettled(lines.map((next) => next.cancel()));
  }
}

function lineReader(stream: ReadableStream<Uint8Array>) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const next = async (): Promise<string> => {
    while (!buffer.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("worker closed its output");
      buffer += value;
    }
    const index = buffer.indexOf("\n");
    const line = buffer.slice(0, index);
    buffer = buffer.slice(index + 1);
    return line;
  };
  next.cancel = () => reader.cancel();
  return next;
}
