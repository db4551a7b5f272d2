/**
 * Serving the examples on node:http, so that each runs on Deno, Node and
 * Bun alike: a Fetch handler bridged to node:http, `--port` (0: any free
 * port, printed as `{"port":n}` once listening), and a clean stop on
 * SIGTERM and SIGINT.
 *
 * @module
 */

import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from "node:http";
import process from "node:process";

/** A node:http listener for a Fetch handler. */
export function fetchListener(
  handler: (request: Request) => Response | Promise<Response>,
): RequestListener {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Uint8Array[] = [];
    for await (const chunk of req) chunks.push(chunk as Uint8Array);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      for (const v of Array.isArray(value) ? value : [value ?? ""]) {
        headers.append(name, v);
      }
    }
    const method = req.method ?? "GET";
    const response = await handler(
      new Request(new URL(req.url ?? "/", `http://${req.headers.host}`), {
        method,
        headers,
        ...(method === "GET" || method === "HEAD"
          ? {}
          : { body: new Blob(chunks as BlobPart[]) }),
      }),
    );
    res.statusCode = response.status;
    for (const [name, value] of response.headers) {
      if (name !== "set-cookie") res.setHeader(name, value);
    }
    const cookies = response.headers.getSetCookie();
    if (cookies.length > 0) res.setHeader("set-cookie", cookies);
    res.end(new Uint8Array(await response.arrayBuffer()));
  };
}

/**
 * Listens on 127.0.0.1 at `--port` (default `fallback`); with `--port 0`
 * prints `{"port":n}`. On SIGTERM or SIGINT, closes and calls `stop`.
 * Returns the server (its `listening` listeners run right after the port
 * is printed, before any request).
 */
export function serve(
  listener: RequestListener,
  stop: () => Promise<unknown>,
  fallback = 8000,
): Server {
  const at = process.argv.indexOf("--port");
  const port = at > 0 ? Number(process.argv[at + 1]) : fallback;
  const server = createServer(listener).listen(port, "127.0.0.1", () => {
    const { port } = server.address() as { port: number };
    console.log(JSON.stringify({ port }));
  });
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      server.close();
      server.closeAllConnections();
      stop().finally(() => process.exit(0));
    });
  }
  return server;
}
