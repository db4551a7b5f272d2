/**
 * Whether a failover can lose a redeemed code, as seen from the database.
 *
 * `take` deletes a code and commits; if the primary then dies before a
 * standby has the commit, and that standby is promoted, the code is back and
 * can be redeemed again. Only synchronous replication (the commit waits for
 * a standby) rules that out.
 *
 * @module
 */

import type { Driver } from "./driver/driver.ts";

/** One standby streaming from the server. */
export interface Standby {
  /** Its `application_name`. */
  readonly name: string;
  /** `streaming`, `catchup`, ... */
  readonly state: string | null;
  /** `sync`, `quorum`, `potential` or `async`. */
  readonly syncState: string | null;
}

/** What the server says about its replication. */
export interface ReplicationReport {
  /** `synchronous_standby_names` of the server. */
  readonly synchronousStandbyNames: string;
  /** `synchronous_commit` as this session sees it (role and database defaults apply). */
  readonly synchronousCommit: string;
  /** The standbys in `pg_stat_replication`. */
  readonly standbys: readonly Standby[];
  /**
   * `"none"`: commits wait for a synchronous standby, so a failover to it
   * cannot lose one; `"asynchronous"`: commits do not wait, so a failover
   * can lose redemptions; `"unknown"`: no standby streams from this server
   * (it has none, or the service replicates by means this view cannot see).
   */
  readonly risk: "none" | "asynchronous" | "unknown";
  /** Synchronous replication is configured but no synchronous standby is connected: commits wait. */
  readonly waitingForStandby: boolean;
  /** The verdict, in a sentence. */
  readonly message: string;
}

/** Settings under which a commit waits for the standby. */
const WAITING_COMMITS = new Set(["on", "remote_write", "remote_apply"]);

/**
 * Reads `synchronous_standby_names`, `synchronous_commit` and
 * `pg_stat_replication`, and judges.
 *
 * @throws {Error} If the role may not see the standbys' state (it needs
 * `pg_read_all_stats`, part of `pg_monitor`); the driver's error on a
 * database error.
 */
export async function replicationReport(
  driver: Driver,
): Promise<ReplicationReport> {
  const [[names, commit] = []] = await driver.send({
    text: `select current_setting('synchronous_standby_names'),
      current_setting('synchronous_commit')`,
  });
  const standbys: Standby[] = (await driver.send({
    text: `select application_name::text, state::text, sync_state::text
      from pg_stat_replication order by application_name`,
  })).map(([name, state, syncState]) => ({
    name: name ?? "",
    state: state ?? null,
    syncState: syncState ?? null,
  }));
  if (standbys.some((standby) => standby.syncState === null)) {
    throw new Error(
      "this role cannot see the standbys' state in pg_stat_replication: " +
        "grant it pg_monitor (or pg_read_all_stats)",
    );
  }
  const trimmed = (names ?? "").trim();
  const synchronous = standbys.filter((s) =>
    s.syncState === "sync" || s.syncState === "quorum"
  );
  const waits = trimmed !== "" && WAITING_COMMITS.has(commit ?? "");
  let risk: ReplicationReport["risk"];
  let message: string;
  if (waits && synchronous.length > 0) {
    risk = "none";
    message = `Commits wait for a synchronous standby (${
      synchronous.map((s) => s.name).join(", ")
    }): a failover to it cannot lose a redeemed code.`;
  } else if (waits) {
    risk = "none";
    message =
      "Synchronous replication is configured, but no synchronous standby is " +
      "connected: commits wait until one is (the store's timeout fires), " +
      "so nothing is lost, but nothing is redeemed either.";
  } else if (standbys.length > 0) {
    risk = "asynchronous";
    message = trimmed === ""
      ? "Standbys replicate asynchronously (synchronous_standby_names is " +
        "empty): a failover can lose redemptions, and a code redeemed just " +
        "before it can be redeemed again."
      : `Commits do not wait for the standbys (synchronous_commit = ${commit}): ` +
        "a failover can lose redemptions, and a code redeemed just before " +
        "it can be redeemed again.";
  } else {
    risk = "unknown";
    message =
      "No standby streams from this server: it has none, or the service " +
      "replicates by means this view cannot see (storage-level replication). " +
      "Check what your provider promises for a failover.";
  }
  return {
    synchronousStandbyNames: trimmed,
    synchronousCommit: commit ?? "",
    standbys,
    risk,
    waitingForStandby: waits && synchronous.length === 0,
    message,
  };
}
