/**
 * JSON fields (`claims`): a deep copy of exactly what JSON can hold, within
 * bounds, so what is stored is what was checked.
 *
 * @module
 */

import { InvalidRecordError } from "./errors.ts";
import {
  isPlainArray,
  isPlainObject,
  isStorableText,
  LIMITS,
} from "./_fields.ts";
import type { JsonObject, JsonValue } from "./types.ts";

// Keys that could reach a prototype if a consumer ever copied the object
// with plain assignment.
const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

/**
 * A deep copy of a JSON object: finite numbers, well-formed strings without
 * NUL, plain objects and ordinary arrays only; no cycles, no
 * `__proto__`/`constructor`/`prototype` key; at most
 * {@linkcode LIMITS.jsonDepth} levels, {@linkcode LIMITS.jsonValues} values
 * and {@linkcode LIMITS.jsonText} characters of JSON.
 *
 * @throws {InvalidRecordError} On the first rule broken, naming `field`.
 */
export function jsonObject(
  value: unknown,
  field: string,
  parsed = false,
): JsonObject {
  if (!isPlainObject(value)) {
    throw new InvalidRecordError(field, "must be a JSON object");
  }
  // The usual claims and context: nothing to walk. An object `JSON.parse`
  // made has only enumerable string keys, and is the caller's own.
  if (parsed) {
    let empty = true;
    for (const _ in value) {
      empty = false;
      break;
    }
    if (empty) return value as JsonObject;
  } else if (
    Object.getOwnPropertyNames(value).length === 0 &&
    Object.getOwnPropertySymbols(value).length === 0
  ) return {};
  const fail = (rule: string): never => {
    throw new InvalidRecordError(field, rule);
  };
  const budget = { values: LIMITS.jsonValues };
  const copy = json(value, 0, new Set(), budget, fail) as JsonObject;
  if (JSON.stringify(copy).length > LIMITS.jsonText) {
    fail(`must serialise to at most ${LIMITS.jsonText} characters of JSON`);
  }
  return copy;
}

function json(
  value: unknown,
  depth: number,
  ancestors: Set<object>,
  budget: { values: number },
  fail: (rule: string) => never,
): JsonValue {
  if (--budget.values < 0) {
    fail(`must hold at most ${LIMITS.jsonValues} values`);
  }
  switch (typeof value) {
    case "boolean":
      return value;
    case "number":
      return Number.isFinite(value)
        ? value
        : fail("must hold only finite numbers");
    case "string":
      if (value.length > LIMITS.text) {
        fail(`must hold strings of at most ${LIMITS.text} characters`);
      }
      return isStorableText(value)
        ? value
        : fail("must hold well-formed Unicode strings without NUL characters");
    case "object":
      break;
    default:
      return fail(`must hold only JSON values (found ${typeof value})`);
  }
  if (value === null) return null;
  if (depth >= LIMITS.jsonDepth) {
    fail(`must be nested at most ${LIMITS.jsonDepth} levels deep`);
  }
  if (ancestors.has(value)) fail("must not be cyclic");
  ancestors.add(value);
  let copy: JsonValue;
  if (Array.isArray(value)) {
    if (!isPlainArray(value)) {
      fail("must hold only ordinary arrays (no holes, no extra properties)");
    }
    const items: JsonValue[] = [];
    for (let i = 0; i < value.length; i++) {
      items.push(json(value[i], depth + 1, ancestors, budget, fail));
    }
    copy = items;
  } else if (isPlainObject(value)) {
    const keys = Reflect.ownKeys(value);
    if (
      keys.some((key) =>
        typeof key !== "string" ||
        !Object.prototype.propertyIsEnumerable.call(value, key)
      )
    ) {
      fail("must have only enumerable string keys (no symbols)");
    }
    const entries: [string, JsonValue][] = [];
    for (const key of keys as string[]) {
      if (FORBIDDEN_KEYS.has(key)) fail(`must not have a "${key}" key`);
      if (!isStorableText(key)) {
        fail("must have well-formed Unicode keys without NUL characters");
      }
      entries.push([key, json(value[key], depth + 1, ancestors, budget, fail)]);
    }
    copy = Object.fromEntries(entries);
  } else {
    copy = fail("must hold only plain objects, arrays and JSON scalars");
  }
  ancestors.delete(value);
  return copy;
}
