/**
 * Every text an error exposes, for the tests that check it holds no secret.
 *
 * @module
 */

/** JSON of a value that may hold bigints (`JSON.stringify` throws on them). */
function json(value: unknown): string {
  return JSON.stringify(
    value,
    (_, v) => typeof v === "bigint" ? String(v) : v,
  ) ?? "";
}

/**
 * Every text an error exposes, everywhere a caller or a logger looks: its
 * string, stack, `Deno.inspect` (hidden properties too) and JSON, and the
 * same of every value reachable through its own properties (names
 * included) and its cause.
 */
export function errorTexts(
  error: unknown,
  seen: Set<unknown> = new Set(),
): string[] {
  if (error === null || typeof error !== "object" || seen.has(error)) {
    return [String(error)];
  }
  seen.add(error);
  const out = [
    String(error),
    (error as Error).stack ?? "",
    Deno.inspect(error, { showHidden: true, depth: 10 }),
    json(error),
  ];
  for (const key of Reflect.ownKeys(error)) {
    const value = (error as Record<PropertyKey, unknown>)[key];
    out.push(String(key), ...errorTexts(value, seen));
  }
  const cause = (error as { cause?: unknown }).cause;
  if (cause !== undefined) out.push(...errorTexts(cause, seen));
  return out;
}
