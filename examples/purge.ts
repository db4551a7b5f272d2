/**
 * Sweeps expired codes and tombstones every ten minutes.
 *
 * On Deno Deploy, `Deno.cron` schedules it (no flag needed there); locally
 * run with `deno run -A --unstable-cron examples/purge.ts`, or without the
 * flag to fall back to a plain interval.
 *
 * @module
 */

import postgres from "postgres";
import { purgeExpired } from "../mod.ts";

const sql = postgres(Deno.env.get("DATABASE_URL")!, {
  max: 1,
  fetch_types: false,
  connect_timeout: 5,
});

async function purge(): Promise<void> {
  try {
    const { codes, tombstones } = await purgeExpired(sql);
    console.log(`purged ${codes} expired codes, ${tombstones} tombstones`);
  } catch (error) {
    // The next run retries; committed batches stay deleted.
    console.error("purge failed:", (error as Error).message);
  }
}

type Cron = (name: string, schedule: string, run: () => Promise<void>) => void;
const cron = (Deno as unknown as { cron?: Cron }).cron;
if (cron) {
  cron("purge expired authorization codes", "*/10 * * * *", purge);
} else {
  await purge();
  setInterval(purge, 10 * 60_000);
}
