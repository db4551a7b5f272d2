/**
 * The CLI's `DATABASE_URL` check refuses only malformed URLs. (What it
 * refuses, and how it says so, is in cli_test.ts.) Whether the driver then
 * reads every well-formed URL right is its own business: postgres.js 3.4
 * takes a bracketed IPv6 host as `[`, and keeps a percent-encoded host or
 * database name encoded.
 */

import { assertEquals } from "@std/assert";
import { databaseUrlProblem } from "../src/_database_url.ts";

Deno.test("a well-formed DATABASE_URL has no problem: encoded passwords, IPv6, several hosts, socket directories, Docker service names", () => {
  for (
    const url of [
      "postgres://postgres@127.0.0.1:5432/test",
      "postgresql://app:p%2Fw%40d%23x%3F@db.example.com:5432/app?sslmode=require",
      "postgres://app:pass:word@db.example.com/app",
      "postgres://app:pass word@db.example.com/app",
      "postgres://app@[::1]:5432/app",
      "postgres://app@[2001:db8::7]/app",
      "postgres://app:pw@primary:5432,standby:5433/app?target_session_attrs=read-write",
      "postgres://app:pw@my_db/app",
      "postgres://app:pw@db.example.com./app",
      "postgres://app:pw@bücher.example/app",
      "postgres://app:pw@%2Fvar%2Frun%2Fpostgresql/app",
      "postgres://app:pw@db.example.com",
      "postgres://app:pw@db.example.com/",
      "postgres://db.example.com:65535/app",
      "POSTGRES://app@db.example.com/app",
      "postgres://app:%F0%9F%94%91@db.example.com/caf%C3%A9",
    ]
  ) {
    assertEquals(databaseUrlProblem(url), undefined, url);
  }
});

Deno.test("a percent-encoding that is not valid UTF-8 is a problem, as postgres.js's decoding would throw on it", () => {
  assertEquals(
    databaseUrlProblem("postgres://app:%C3%28@db.example.com/app"),
    "has a password with a % that does not start a valid percent-encoding " +
      "(write % as %25)",
  );
});
