/**
 * The few runtime facilities the library needs that differ between Deno,
 * Node and Bun, each behind a feature check. The library uses no `Deno`
 * global and no built-in newer than Node 22 has, except here.
 *
 * @module
 */

type Timer = ReturnType<typeof setTimeout>;

/**
 * Lets the process exit while `timer` is pending: `Deno.unrefTimer` on
 * Deno (whose timers are numbers), `timer.unref()` on Node and Bun.
 *
 * @param timer A timer from `setTimeout`.
 * @returns The same timer.
 */
export function unrefTimer(timer: Timer): Timer {
  if (typeof timer === "number") {
    const deno = (globalThis as {
      Deno?: { unrefTimer?: (id: number) => void };
    }).Deno;
    deno?.unrefTimer?.(timer);
  } else {
    (timer as { unref?: () => unknown }).unref?.();
  }
  return timer;
}

/**
 * Lets `timer` keep the process alive again (undoes {@linkcode unrefTimer}).
 *
 * @param timer A timer from `setTimeout`.
 * @returns The same timer.
 */
export function refTimer(timer: Timer): Timer {
  if (typeof timer === "number") {
    const deno = (globalThis as {
      Deno?: { refTimer?: (id: number) => void };
    }).Deno;
    deno?.refTimer?.(timer);
  } else {
    (timer as { ref?: () => unknown }).ref?.();
  }
  return timer;
}

interface ToBase64 {
  toBase64?: (options: { alphabet: string; omitPadding: boolean }) => string;
}

/** `toBase64`'s options, made once. */
const BASE64URL = { alphabet: "base64url", omitPadding: true };

/**
 * Base64url without padding (RFC 4648 §5): `Uint8Array.prototype.toBase64`
 * where the runtime has it (Deno 2.5+, Bun, Node 25+), `btoa` elsewhere.
 *
 * @param bytes The bytes.
 * @returns Their base64url encoding, unpadded.
 */
export function base64url(bytes: Uint8Array): string {
  if (typeof (bytes as ToBase64).toBase64 === "function") {
    return (bytes as ToBase64).toBase64!(BASE64URL);
  }
  let binary = "";
  for (let i = 0; i < bytes.length; i++) {
    binary += String.fromCharCode(bytes[i]!);
  }
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}
