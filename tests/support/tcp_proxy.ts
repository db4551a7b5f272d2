/**
 * A TCP proxy in front of a PostgreSQL server, for tests that need the
 * network to misbehave: hold every byte for a while (a frozen server or a
 * stalled link), refuse new connections while the open ones keep working (a
 * host that just became unreachable), or cut every connection.
 *
 * @module
 */

/** A running proxy. */
export interface TcpProxy extends AsyncDisposable {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  /** `url` with its host and port replaced by the proxy's. */
  readonly url: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Holds every byte, both ways, on every connection until {@linkcode resume}. */
  pause(): void;
  /** Lets the held bytes through. */
  resume(): void;
  /** Stops listening: new connections are refused, open ones keep working. */
  refuse(): void;
  /** Listens again on the same port. */
  accept(): void;
  /** Closes every open connection. */
  cut(): void;
}

/**
 * Starts a proxy that forwards to the host and port of `url`.
 *
 * @param url A `postgres://` URL of the server.
 * @returns The proxy; dispose it to close everything.
 */
export function startTcpProxy(url: string): TcpProxy {
  const target = new URL(url);
  const hostname = target.hostname;
  const port = Number(target.port || 5432);
  const open = new Set<Deno.Conn>();
  const pumps = new Set<Promise<void>>();
  let listener: Deno.TcpListener | undefined;
  let accepted = 0;
  let held: PromiseWithResolvers<void> | undefined;

  const forward = (from: Deno.Conn, to: Deno.Conn) =>
    from.readable.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        async transform(chunk, controller) {
          while (held) await held.promise;
          controller.enqueue(chunk);
        },
      }),
    ).pipeTo(to.writable).catch(() => {});

  const serve = async (l: Deno.TcpListener) => {
    for await (const client of l) {
      accepted++;
      let server: Deno.Conn;
      try {
        server = await Deno.connect({ hostname, port });
      } catch {
        client.close();
        continue;
      }
      open.add(client);
      open.add(server);
      const both = Promise.all([
        forward(client, server),
        forward(server, client),
      ]).then(() => {
        for (const conn of [client, server]) {
          open.delete(conn);
          try {
            conn.close();
          } catch {
            // Already closed by a finished pipe.
          }
        }
      });
      pumps.add(both);
      both.finally(() => pumps.delete(both));
    }
  };

  const listen = (at: number) => {
    listener = Deno.listen({ hostname: "127.0.0.1", port: at });
    void serve(listener).catch(() => {});
    return listener.addr.port;
  };
  const proxyPort = listen(0);
  const proxied = new URL(url);
  proxied.hostname = "127.0.0.1";
  proxied.port = String(proxyPort);

  return {
    port: proxyPort,
    url: proxied.href,
    get accepted() {
      return accepted;
    },
    pause() {
      held ??= Promise.withResolvers<void>();
    },
    resume() {
      held?.resolve();
      held = undefined;
    },
    refuse() {
      listener?.close();
      listener = undefined;
    },
    accept() {
      if (!listener) listen(proxyPort);
    },
    cut() {
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      open.clear();
    },
    async [Symbol.asyncDispose]() {
      this.resume();
      this.refuse();
      this.cut();
      await Promise.allSettled([...pumps]);
    },
  };
}
