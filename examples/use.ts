import process from "node:process";
import postgres from "postgres";
import { crypto } from "@std/crypto";
import { timingSafeEqual } from "@std/crypto/timing-safe-equal";
import { createCodeStore, migrate } from "@attesto/code-store";

const sql = postgres(process.env.DATABASE_URL!);
await migrate(sql); // creates the tables, or only reads the catalog
const store = createCodeStore(sql);

const base64url = (bytes: Uint8Array) =>
  bytes.toBase64({ alphabet: "base64url", omitPadding: true });
const s256 = (verifier: string) =>
  base64url(
    new Uint8Array(
      crypto.subtle.digestSync("SHA-256", new TextEncoder().encode(verifier)),
    ),
  );

// Authorization endpoint: the request carried an S256 code_challenge.
const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
const code = base64url(crypto.getRandomValues(new Uint8Array(32)));
await store.put({
  code,
  expiresAt: Math.floor(Date.now() / 1000) + 60,
  data: {
    clientId: "s6BhdRkqt3",
    subject: "user-42",
    redirectUri: "https://client.example.org/cb",
    scope: ["openid"],
    codeChallenge: s256(verifier),
    codeChallengeMethod: "S256",
  },
});

// Token endpoint: take first (the code is spent whatever follows), then check.
async function redeem(
  code: string,
  clientId: string,
  redirectUri: string,
  codeVerifier: string,
) {
  const entry = await store.take(code);
  if (entry === null) return "invalid_grant"; // unknown, or used before
  const { data } = entry;
  const pkce = timingSafeEqual( // RFC 7636 §4.6
    new TextEncoder().encode(s256(codeVerifier)),
    new TextEncoder().encode(data.codeChallenge),
  );
  if (
    !pkce || entry.expiresAt <= Date.now() / 1000 ||
    data.clientId !== clientId || data.redirectUri !== redirectUri
  ) return "invalid_grant";
  return `tokens for ${data.subject}`;
}

const cb = "https://client.example.org/cb";
console.log(await redeem(code, "s6BhdRkqt3", cb, verifier)); // tokens for user-42
console.log(await redeem(code, "s6BhdRkqt3", cb, verifier)); // invalid_grant
await sql.end();
