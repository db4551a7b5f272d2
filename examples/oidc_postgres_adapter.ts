/**
 * A small PostgreSQL adapter for oidc-provider's other models (sessions,
 * grants, interactions, access and refresh tokens, clients...), so that
 * several provider processes share them: one `jsonb` payload per model
 * instance, with the indexes oidc-provider's lookups need.
 *
 * It is a plain find-then-consume adapter, as oidc-provider's contract asks:
 * `consume` marks an instance, and a later `find` returns it marked. Used
 * for `AuthorizationCode` as well, it lets concurrent token requests with
 * one code all pass (the tests use it so, as the control); with
 * `createOidcProviderAdapter`, codes go to the code store instead.
 *
 * @module
 */

import type postgres from "postgres";
import type {
  OidcAdapter,
  OidcAdapterClass,
  OidcPayload,
} from "@attesto/code-store/oidc-provider";

/** The table, created by {@linkcode migrateOidcModels}. */
const TABLE = "oidc_models";

/** Creates the models table (idempotent). */
export async function migrateOidcModels(sql: postgres.Sql): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext('oidc_models migrate'))`;
    await tx.unsafe(`
      create table if not exists ${TABLE} (
        model text not null,
        id text not null,
        payload jsonb not null,
        grant_id text,
        user_code text,
        uid text,
        expires_at timestamptz,
        consumed_at timestamptz,
        primary key (model, id)
      );
      create index if not exists ${TABLE}_grant_id_idx on ${TABLE} (grant_id);
      create index if not exists ${TABLE}_user_code_idx on ${TABLE} (user_code);
      create index if not exists ${TABLE}_uid_idx on ${TABLE} (uid);
    `);
  });
}

/**
 * The adapter class for a pool: `adapter: postgresAdapter(sql)`, or as the
 * `fallback` of `createOidcProviderAdapter`.
 */
export function postgresAdapter(sql: postgres.Sql): OidcAdapterClass {
  return class PostgresAdapter implements OidcAdapter {
    constructor(readonly model: string) {}

    async upsert(id: string, payload: OidcPayload, expiresIn: number) {
      const grantId = typeof payload.grantId === "string"
        ? payload.grantId
        : null;
      const userCode = typeof payload.userCode === "string"
        ? payload.userCode
        : null;
      const uid = typeof payload.uid === "string" ? payload.uid : null;
      const expires = typeof expiresIn === "number"
        ? new Date(Date.now() + expiresIn * 1000)
        : null;
      await sql`
        insert into ${sql(TABLE)} (model, id, payload, grant_id, user_code,
          uid, expires_at)
        values (${this.model}, ${id}, ${
        sql.json(payload as postgres.JSONValue)
      },
          ${grantId}, ${userCode}, ${uid}, ${expires})
        on conflict (model, id) do update set payload = excluded.payload,
          grant_id = excluded.grant_id, user_code = excluded.user_code,
          uid = excluded.uid, expires_at = excluded.expires_at
      `;
    }

    find(id: string) {
      return this.#findBy(sql`id = ${id}`);
    }

    findByUserCode(userCode: string) {
      return this.#findBy(sql`user_code = ${userCode}`);
    }

    findByUid(uid: string) {
      return this.#findBy(sql`uid = ${uid}`);
    }

    async #findBy(
      where: postgres.PendingQuery<postgres.Row[]>,
    ): Promise<OidcPayload | undefined> {
      const [row] = await sql<
        { payload: Record<string, unknown>; consumed: number | null }[]
      >`
        select payload,
          floor(extract(epoch from consumed_at))::float8 as consumed
        from ${sql(TABLE)}
        where model = ${this.model} and ${where}
          and (expires_at is null or expires_at > now())
      `;
      if (!row) return undefined;
      return row.consumed === null
        ? row.payload
        : { ...row.payload, consumed: row.consumed };
    }

    async consume(id: string) {
      await sql`
        update ${sql(TABLE)} set consumed_at = now()
        where model = ${this.model} and id = ${id}
      `;
    }

    async destroy(id: string) {
      await sql`
        delete from ${sql(TABLE)} where model = ${this.model} and id = ${id}
      `;
    }

    async revokeByGrantId(grantId: string) {
      await sql`
        delete from ${sql(TABLE)}
        where model = ${this.model} and grant_id = ${grantId}
      `;
    }
  };
}
