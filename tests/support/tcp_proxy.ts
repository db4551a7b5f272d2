/**
 * A TCP proxy in front of a PostgreSQL server, for tests that need the
 * network to misbehave: hold every byte for a while (a frozen server or a
 * stalled link), hold only the server's replies or only new connections (a
 * slow path for one packet, to order events that race), refuse new
 * connections while the open ones keep working (a host that just became
 * unreachable), or reset every connection (a host that died: the client
 * reads ECONNRESET).
 *
 * @module
 */

import net from "node:net";

/** A running proxy. */
export interface TcpProxy extends AsyncDisposable {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  /** `url` with its host and port replaced by the proxy's. */
  readonly url: string;
  /** Holds every byte, both ways, on every connection until {@linkcode resume}. */
  pause(): void;
  /**
   * Holds what the server sends on the connections open now, until
   * {@linkcode resumeReplies} or {@linkcode resume}; what clients send goes
   * through.
   */
  holdReplies(): void;
  /** Lets the held replies through. */
  resumeReplies(): void;
  /**
   * Holds every byte of the connections opened from now on, until
   * {@linkcode resume}.
   */
  holdNew(): void;
  /** Lets every held byte through, and holds nothing more. */
  resume(): void;
  /** How many client connections have closed so far. */
  readonly closed: number;
  /** Stops listening: new connections are refused, open ones keep working. */
  refuse(): void;
  /** Listens again on the same port. */
  accept(): Promise<void>;
  /** Resets every open connection (TCP RST to the client). */
  reset(): void;
}

/**
 * Starts a proxy that forwards to the host and port of `url`.
 *
 * @param url A `postgres://` URL of the server.
 * @returns The proxy; dispose it to close everything.
 */
export async function startTcpProxy(url: string): Promise<TcpProxy> {
  const target = new URL(url);
  const open = new Set<net.Socket>();
  let paused = false;
  let closed = 0;
  const upstreams = new Set<net.Socket>();
  const replies = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(
      Number(target.port || 5432),
      target.hostname,
    );
    upstreams.add(upstream);
    upstream.on("close", () => upstreams.delete(upstream));
    client.on("close", () => closed++);
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => {
        open.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
    // After pipe(), which resumes its source.
    if (paused) {
      client.pause();
      upstream.pause();
    }
  });
  const listen = (port: number) =>
    new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  await listen(0);
  const port = (server.address() as net.AddressInfo).port;
  const proxied = new URL(url);
  proxied.hostname = "127.0.0.1";
  proxied.port = String(port);

  return {
    port,
    url: proxied.href,
    pause() {
      paused = true;
      for (const socket of open) socket.pause();
    },
    holdReplies() {
      for (const socket of upstreams) {
        replies.add(socket);
        socket.pause();
      }
    },
    resumeReplies() {
      for (const socket of replies) socket.resume();
      replies.clear();
    },
    holdNew() {
      paused = true;
    },
    resume() {
      paused = false;
      replies.clear();
      for (const socket of open) socket.resume();
    },
    get closed() {
      return closed;
    },
    refuse() {
      server.close();
    },
    accept() {
      return server.listening ? Promise.resolve() : listen(port);
    },
    reset() {
      for (const socket of open) socket.resetAndDestroy();
    },
    async [Symbol.asyncDispose]() {
      for (const socket of open) socket.destroy();
      if (server.listening) {
        await new Promise((resolve) => server.close(resolve));
      }
    },
  };
}
