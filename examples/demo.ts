/**
 * `deno task demo`: one authorization code, 1000 concurrent redemptions,
 * exactly one winner.
 *
 * Runs on an embedded PostgreSQL unless `DATABASE_URL` is set (then it
 * works in a table of its own and drops it at the end).
 *
 * @module
 */

import postgres from "postgres";
import { type CodeEntry, createCodeStore, migrate } from "../mod.ts";
import { databaseFromEnv } from "../tools/embedded_postgres.ts";
import { newVerifier, pkceMatches, s256 } from "./pkce.ts";

const REDEMPTIONS = 1000;
const POOLS = 4;
const CONNECTIONS_PER_POOL = 10;

console.log("@attesto/code-store demo\n");

const starting = performance.now();
const { url, server } = await databaseFromEnv();
// On a server of the user's, a table of its own, dropped at the end.
const table = server
  ? "authorization_codes"
  : `code_store_demo_${crypto.randomUUID().slice(0, 8)}`;
console.log(
  server
    ? `database   embedded PostgreSQL on port ${server.port}, started in ${
      ms(performance.now() - starting)
    }`
    : `database   DATABASE_URL, table "${table}"`,
);

const pools = Array.from(
  { length: POOLS },
  () => postgres(url, { max: CONNECTIONS_PER_POOL, onnotice: () => {} }),
);
let exitCode = 1;
try {
  const [admin] = pools as [postgres.Sql];
  await migrate(admin, { table });
  const [{ version }] = await admin<[{ version: string }]>`
    select current_setting('server_version') as version
  `;
  console.log(`migrated   table "${table}" on PostgreSQL ${version}`);

  // The authorization endpoint: a PKCE request comes in, a code goes out.
  const verifier = newVerifier();
  const challenge = s256(verifier);
  const code = crypto.getRandomValues(new Uint8Array(32))
    .toBase64({ alphabet: "base64url", omitPadding: true });
  const stores = pools.map((sql) => createCodeStore(sql, { table }));
  await stores[0]!.put({
    code,
    expiresAt: Math.floor(Date.now() / 1000) + 60,
    data: {
      clientId: "demo-client",
      subject: "user-42",
      grantId: crypto.randomUUID(),
      redirectUri: "http://127.0.0.1:8000/callback",
      scope: ["openid", "profile"],
      codeChallenge: challenge,
      codeChallengeMethod: "S256",
    },
  });
  console.log(
    "issued     1 code (256 random bits), stored only as its SHA-256 hash",
  );

  // Every connection opened up front, so the race is between statements.
  await Promise.all(
    pools.flatMap((sql) =>
      Array.from({ length: CONNECTIONS_PER_POOL }, () => sql`select 1`)
    ),
  );
  console.log(
    `racing     ${REDEMPTIONS} concurrent take() calls over ${POOLS} pools ` +
      `(${POOLS * CONNECTIONS_PER_POOL} connections)`,
  );
  const started = performance.now();
  const outcomes = await Promise.allSettled(
    Array.from(
      { length: REDEMPTIONS },
      (_, i) => stores[i % POOLS]!.take(code),
    ),
  );
  const elapsed = performance.now() - started;
  const winners = outcomes.flatMap((o) =>
    o.status === "fulfilled" && o.value ? [o.value] : []
  );
  const nulls = outcomes.filter((o) =>
    o.status === "fulfilled" && o.value === null
  ).length;
  const errors = outcomes.filter((o) => o.status === "rejected");
  console.log(
    `result     ${winners.length} winner, ${nulls} null (already spent), ` +
      `${errors.length} errors, in ${ms(elapsed)}`,
  );
  for (const error of errors.slice(0, 3)) {
    console.log(`           error: ${(error as PromiseRejectedResult).reason}`);
  }

  const entry: CodeEntry | undefined = winners[0];
  if (entry) {
    const { data } = entry;
    console.log("grant      (what the token endpoint gets; no secret in it)");
    console.log(`             client_id     ${data.clientId}`);
    console.log(`             subject       ${data.subject}`);
    console.log(`             scope         ${data.scope.join(" ")}`);
    console.log(`             redirect_uri  ${data.redirectUri}`);
    console.log(
      `             expires_at    ${
        new Date(entry.expiresAt * 1000).toISOString()
      }`,
    );
    // The token endpoint then checks PKCE (RFC 7636 §4.6).
    const pkce = pkceMatches(verifier, data.codeChallenge);
    console.log(
      `pkce       code_verifier ${
        pkce ? "matches" : "does NOT match"
      } the stored S256 challenge`,
    );
    const replay = await stores[1]!.take(code);
    const tombstone = await stores[2]!.spent(code);
    console.log(`replay     take() of the same code now returns ${replay}`);
    console.log(
      `           spent() shows its tombstone: client ${tombstone?.clientId}, ` +
        `grant ${tombstone?.grantId?.slice(0, 8)}..., spent at ${
          tombstone && new Date(tombstone.spentAt * 1000).toISOString()
        }`,
    );
    exitCode = winners.length === 1 && errors.length === 0 && pkce &&
        replay === null && tombstone?.grantId === data.grantId
      ? 0
      : 1;
  }
  if (!server) {
    await admin`drop table ${admin(table)}, ${admin(`${table}_spent`)}`;
  }
} finally {
  await Promise.all(pools.map((sql) => sql.end({ timeout: 5 })));
  if (server) {
    await server.destroy();
    console.log("cleanup    embedded PostgreSQL stopped and removed");
  } else {
    console.log(`cleanup    table "${table}" dropped`);
  }
}
console.log(
  exitCode === 0
    ? "\nok: the code was redeemed exactly once"
    : "\nFAILED: see above",
);
Deno.exit(exitCode);

function ms(value: number): string {
  return value >= 1000
    ? `${(value / 1000).toFixed(1)} s`
    : `${Math.round(value)} ms`;
}
