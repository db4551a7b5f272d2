/**
 * PostgreSQL's CancelRequest (protocol §53.2.7), sent by the store itself
 * to every host of a pool, on both postgres.js majors.
 *
 * Why not the driver's own `query.cancel()`:
 *
 * - both majors write the request with `socket.end(message)`. PgBouncer
 *   reads the FIN first and drops the request ("client unexpected eof"),
 *   and PgBouncer 1.18 can crash on it (`disconnect_client(): bad client
 *   state`): through PgBouncer, a cancelled statement runs on
 *   (`pgbouncer_test.ts` shows it for 4.2.0's `cancel()`). Here the request
 *   is written, and the server closes the socket once it has acted on it.
 * - postgres.js 3.4's `cancel()` returns `null` and drops the promise of the
 *   connection it opens, so a request that cannot connect rejects unhandled
 *   and ends a Deno process; it goes to the first host of a multi-host URL;
 *   and a query cancelled while its connection opens costs the pool that
 *   connection for good.
 *
 * @module
 */

import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";
import { unrefTimer } from "../_platform.ts";

/** The connection settings of a pool that a cancel request needs. */
export interface CancelTarget {
  readonly host?: readonly string[] | undefined;
  readonly port?: readonly number[] | undefined;
  readonly path?: string | false | undefined;
  readonly ssl?: unknown;
  readonly sslnegotiation?: string | null | undefined;
  readonly connect_timeout?: number | undefined;
}

/**
 * Sends a CancelRequest for backend `pid` to every host of `options` (only
 * the one that runs the backend acts on it), negotiating TLS as postgres.js
 * does for `ssl`.
 *
 * @returns Once every host has answered or failed: `"delivered"` if the
 * hosts that were sent the request closed its connection, which a server
 * does once it has acted on it; `"failed"` if none was sent it (so none
 * ever acts on it); `"unknown"` if one was sent it but did not close in
 * time (it may still act on it, at any later moment). Never rejects.
 */
export function cancelBackend(
  options: CancelTarget,
  pid: number,
  secret: number,
): Promise<CancelOutcome> {
  const message = new Uint8Array(16);
  const view = new DataView(message.buffer);
  view.setInt32(0, 16);
  view.setInt32(4, 80877102); // the cancel request code
  view.setInt32(8, pid);
  view.setInt32(12, secret);
  const timeout = 1000 * (options.connect_timeout || 10);
  const targets: { host?: string; port?: number; path?: string }[] =
    options.path
      ? [{ path: options.path }]
      : (options.host ?? ["localhost"]).map((host, i) => ({
        host,
        port: options.port?.[i] ?? options.port?.[0] ?? 5432,
      }));
  return Promise.all(
    targets.map((target) => deliver(target, message, options, timeout)),
  ).then((outcomes) =>
    outcomes.includes("unknown")
      ? "unknown"
      : outcomes.includes("delivered")
      ? "delivered"
      : "failed"
  );
}

/** What became of a cancel request (see {@linkcode cancelBackend}). */
export type CancelOutcome = "delivered" | "failed" | "unknown";

async function deliver(
  target: { host?: string; port?: number; path?: string },
  message: Uint8Array,
  options: CancelTarget,
  timeout: number,
): Promise<CancelOutcome> {
  let written = false;
  let expired = false;
  // The socket exists from the start, so the timer ends a connect that
  // never completes (a host that drops packets) as well as a slow answer.
  let socket: Socket = target.path
    ? netConnect(target.path)
    : netConnect(target.port!, target.host!);
  socket.on("error", () => {}); // each stage below listens for its own
  const timer = unrefTimer(setTimeout(() => {
    expired = true;
    socket.destroy();
  }, timeout));
  try {
    await opened(socket);
    socket.setTimeout(timeout, () => {
      expired = true;
      socket.destroy();
    });
    const { ssl, sslnegotiation } = options;
    if (ssl && sslnegotiation === "direct") {
      socket = await startTls(socket, target.host, ssl, true);
    } else if (ssl) {
      const sslRequest = new Uint8Array([0, 0, 0, 8, 4, 210, 22, 47]);
      const answer = await exchange(socket, sslRequest);
      if (answer === 83) { // "S"
        socket = await startTls(socket, target.host, ssl, false);
      } else if (ssl !== "prefer" && ssl !== "allow") {
        return "failed"; // TLS required and refused: nothing in the clear
      }
    }
    // Written, then the server closes the socket once it has acted on it.
    // Not `end(message)`: PgBouncer reads the FIN first and drops the
    // request ("client unexpected eof"), and PgBouncer 1.18 can crash on it
    // (`disconnect_client(): bad client state`).
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.once("close", () => resolve());
      written = true;
      socket.write(message);
    });
    return expired ? "unknown" : "delivered";
  } catch {
    return written ? "unknown" : "failed";
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}

function opened(socket: Socket) {
  return new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.once("close", () => reject(new Error("closed")));
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve();
    });
  });
}

/** Writes `bytes` and resolves with the first byte of the answer. */
function exchange(socket: Socket, bytes: Uint8Array): Promise<number> {
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.once("close", () => reject(new Error("closed")));
    socket.once("data", (data: Uint8Array) => resolve(data[0]!));
    socket.write(bytes);
  });
}

function startTls(
  socket: Socket,
  host: string | undefined,
  ssl: unknown,
  direct: boolean,
): Promise<Socket> {
  const options: ConnectionOptions = {
    socket,
    ...(host && !/^[\d.:]+$/.test(host) ? { servername: host } : {}),
    ...(direct ? { ALPNProtocols: ["postgresql"] } : {}),
    ...(ssl === "require" || ssl === "allow" || ssl === "prefer"
      ? { rejectUnauthorized: false }
      : typeof ssl === "object" && ssl !== null
      ? ssl as ConnectionOptions
      : {}),
  };
  return new Promise((resolve, reject) => {
    const secure = tlsConnect(options);
    secure.once("error", reject);
    secure.once("secureConnect", () => {
      secure.off("error", reject);
      resolve(secure);
    });
  });
}
