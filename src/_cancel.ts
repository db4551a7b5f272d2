/**
 * Cancelling a statement on the server that runs it, with PostgreSQL's
 * CancelRequest (protocol §53.2.7), without postgres.js's `query.cancel()`.
 *
 * postgres.js 3.4.9's `cancel()` returns `null` and drops the promise of the
 * connection it opens to send the request, so a request that cannot connect
 * (the primary just died) rejects unhandled and ends a Deno process; it
 * always goes to the first host of a multi-host URL; and a query cancelled
 * while its connection is still opening costs the pool that connection for
 * good. So the store never calls it: a statement that has not been written
 * to a connection is left to run as a no-op (see `coalesce.ts`), and one that
 * runs is stopped by `_driver.ts` with the request sent here, every failure
 * caught.
 *
 * @module
 */

import { connect as netConnect, type Socket } from "node:net";
import { connect as tlsConnect, type ConnectionOptions } from "node:tls";
import { unrefTimer } from "./_platform.ts";
import { OperationTimeoutError } from "./errors.ts";

/** The connection settings of a postgres.js pool that a cancel request needs. */
interface Target {
  readonly host?: readonly string[] | undefined;
  readonly port?: readonly number[] | undefined;
  readonly path?: string | false | undefined;
  readonly ssl?: unknown;
  readonly sslnegotiation?: string | null | undefined;
  readonly connect_timeout?: number | undefined;
}

/**
 * Sends a CancelRequest for backend `pid` to every host of `options`,
 * negotiating TLS as postgres.js does for `ssl`. Failures are ignored.
 */
export function sendCancelRequest(
  options: Target,
  pid: number,
  secret: number,
): void {
  const message = new Uint8Array(16);
  const view = new DataView(message.buffer);
  view.setInt32(0, 16);
  view.setInt32(4, 80877102); // the cancel request code
  view.setInt32(8, pid);
  view.setInt32(12, secret);
  const timeout = 1000 * (options.connect_timeout ?? 10);
  const targets: { host?: string; port?: number; path?: string }[] =
    options.path
      ? [{ path: options.path }]
      : (options.host ?? ["localhost"]).map((host, i) => ({
        host,
        port: options.port?.[i] ?? options.port?.[0] ?? 5432,
      }));
  for (const target of targets) {
    void deliver(target, message, options, timeout).catch(() => {});
  }
}

async function deliver(
  target: { host?: string; port?: number; path?: string },
  message: Uint8Array,
  options: Target,
  timeout: number,
): Promise<void> {
  // The socket exists from the start, so the timer ends a connect that
  // never completes (a host that drops packets) as well as a slow answer.
  let socket: Socket = target.path
    ? netConnect(target.path)
    : netConnect(target.port!, target.host!);
  socket.on("error", () => {}); // each stage below listens for its own
  const timer = unrefTimer(setTimeout(() => socket.destroy(), timeout));
  try {
    await opened(socket);
    socket.setTimeout(timeout, () => socket.destroy());
    const { ssl, sslnegotiation } = options;
    if (ssl && sslnegotiation === "direct") {
      socket = await startTls(socket, target.host, ssl, true);
    } else if (ssl) {
      const sslRequest = new Uint8Array([0, 0, 0, 8, 4, 210, 22, 47]);
      const answer = await exchange(socket, sslRequest);
      if (answer === 83) { // "S"
        socket = await startTls(socket, target.host, ssl, false);
      } else if (ssl !== "prefer" && ssl !== "allow") {
        return; // TLS required and refused: send nothing in the clear
      }
    }
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.once("close", () => resolve());
      socket.end(message);
    });
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

/**
 * Settles with `work`, or rejects with an {@linkcode OperationTimeoutError}
 * once `ms` have passed, calling `onExpired` then.
 */
export function bounded<T>(
  operation: string,
  ms: number,
  work: Promise<T>,
  onExpired?: () => void,
): Promise<T> {
  if (ms === Infinity) return work;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onExpired?.();
      reject(new OperationTimeoutError(operation, ms, true));
    }, ms);
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}
