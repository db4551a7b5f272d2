/**
 * What is wrong with a `DATABASE_URL`, said without quoting it: the CLI
 * checks the URL before the driver reads it, so that a mistake is named for
 * what it is (the scheme, the host, the port, the encoding) and no part of
 * the URL, the password above all, reaches an error message.
 *
 * @module
 */

const SHAPE = "postgres://user:password@host:5432/database";

/**
 * Why `url` is not a PostgreSQL connection URL, as a phrase that quotes
 * nothing of it (except a short scheme), or `undefined` when it is one.
 *
 * The URL is read as postgres.js reads it: the authority ends at the first
 * `/`, `?` or `#`; user name and password end at the last `@` in it; the
 * host part may list several `host:port` entries separated by commas.
 *
 * @param url The value of `DATABASE_URL`.
 * @returns The problem, such as `"has a port that is not a number"`.
 */
export function databaseUrlProblem(url: string): string | undefined {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(url);
  if (!scheme) return `must start with postgres:// or postgresql:// (${SHAPE})`;
  if (!/^postgres(ql)?$/i.test(scheme[1]!)) {
    return scheme[1]!.length <= 16
      ? `has the scheme ${
        scheme[1]
      }://; it must be postgres:// or postgresql://`
      : "must start with postgres:// or postgresql://";
  }
  const rest = url.slice(scheme[0].length);
  const end = rest.search(/[/?#]/);
  const authority = end === -1 ? rest : rest.slice(0, end);
  const tail = end === -1 ? "" : rest.slice(end);
  // An @ after the authority: a / ? or # in the user name or password cut
  // the URL there, and what follows the cut would be read as host and port.
  if (tail.includes("@")) {
    return "has a user name or password with an unencoded / ? or # in it " +
      "(write / as %2F, ? as %3F, # as %23)";
  }
  if (tail.includes("#")) return "has an unencoded # (write it as %23)";

  const at = authority.lastIndexOf("@");
  const userinfo = at === -1 ? "" : authority.slice(0, at);
  if (userinfo.includes("@")) {
    return "has a user name or password with an unencoded @ in it " +
      "(write it as %40)";
  }
  const colon = userinfo.indexOf(":");
  const user = colon === -1 ? userinfo : userinfo.slice(0, colon);
  const password = colon === -1 ? "" : userinfo.slice(colon + 1);
  if (!decodes(user)) return `has a user name ${BAD_PERCENT}`;
  if (!decodes(password)) return `has a password ${BAD_PERCENT}`;

  const hosts = authority.slice(at + 1).split(",");
  for (const [i, entry] of hosts.entries()) {
    const problem = hostProblem(entry);
    if (problem) {
      return hosts.length > 1
        ? `${problem} (host ${i + 1} of ${hosts.length})`
        : problem;
    }
  }

  const path = tail.startsWith("/") ? tail.slice(1).split("?")[0]! : "";
  if (path.includes("/")) {
    return "has a database name with an unencoded / in it (write it as %2F)";
  }
  if (!decodes(path)) return `has a database name ${BAD_PERCENT}`;
  return undefined;
}

const BAD_PERCENT =
  "with a % that does not start a valid percent-encoding (write % as %25)";

/** What is wrong with one `host[:port]` entry, or `undefined`. */
function hostProblem(entry: string): string | undefined {
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(entry);
  let host: string;
  let port: string | undefined;
  if (bracketed) {
    host = entry.slice(0, bracketed[1]!.length + 2);
    port = bracketed[2];
    if (!isIpv6(host)) return "has a host that is not a valid IPv6 address";
  } else {
    if (entry.startsWith("[")) return "has a host with a [ but no ]";
    if ((entry.match(/:/g) ?? []).length > 1) {
      return "has a host with more than one : (an IPv6 address goes in " +
        "brackets: [::1]:5432)";
    }
    const colon = entry.indexOf(":");
    host = colon === -1 ? entry : entry.slice(0, colon);
    port = colon === -1 ? undefined : entry.slice(colon + 1);
    if (host === "") return `has an empty host (${SHAPE})`;
    if (!decodes(host)) return `has a host ${BAD_PERCENT}`;
    const name = decodeURIComponent(host);
    // A percent-encoded absolute path names a Unix-domain socket directory.
    if (!name.startsWith("/") && !isHostName(name)) {
      return "has a host that is not a valid host name or IP address";
    }
  }
  if (port === undefined) return undefined;
  if (port === "") return "has an empty port (give one, or drop the :)";
  if (!/^[0-9]+$/.test(port)) return "has a port that is not a number";
  const number = Number(port);
  if (number < 1 || number > 65535) {
    return "has a port out of range (1 to 65535)";
  }
  return undefined;
}

/** Labels of letters, digits, `_` and `-`, separated by dots. */
function isHostName(name: string): boolean {
  const labels = name.replace(/\.$/, "").split(".");
  return labels.every((label) =>
    /^[\p{L}\p{N}_](?:[\p{L}\p{N}_-]{0,61}[\p{L}\p{N}_])?$/u.test(label)
  );
}

function isIpv6(host: string): boolean {
  try {
    return new URL(`http://${host}/`).hostname.startsWith("[");
  } catch {
    return false;
  }
}

function decodes(text: string): boolean {
  try {
    decodeURIComponent(text);
    return true;
  } catch {
    return false;
  }
}
