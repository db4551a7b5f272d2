/**
 * Parsing the JSON text of an entry read from the database, around a V8
 * defect: `JSON.parse` can decode an escaped object key as a key seen
 * before whose characters match the escaped key's raw text (after an
 * object with the key `\` was parsed, the key `"\""` of an object of the
 * same shape comes back as `\`). Seen on Deno 2.8 and 2.9 and Node 24, not
 * on Bun (chromium 521080746, nodejs/node#63785). A `claims` or `context`
 * object with such keys would come back with other keys than were stored.
 *
 * A text without a backslash has no escaped key and goes to `JSON.parse`;
 * the others, rare, are read here, strictly (RFC 8259).
 *
 * @module
 */

/**
 * Parses JSON text, as `JSON.parse` would without its escaped-key defect.
 *
 * @param text JSON text.
 * @returns The value.
 * @throws {SyntaxError} If the text is not JSON.
 */
export function parseJson(text: string): unknown {
  if (!text.includes("\\")) return JSON.parse(text);
  const reader = new Reader(text);
  const value = reader.value();
  reader.end();
  return value;
}

/** A recursive-descent reader of one JSON text (RFC 8259 §2 to §7). */
class Reader {
  #at = 0;
  readonly #text: string;

  constructor(text: string) {
    this.#text = text;
  }

  value(): unknown {
    this.#space();
    const char = this.#text[this.#at];
    switch (char) {
      case "{":
        return this.#object();
      case "[":
        return this.#array();
      case '"':
        return this.#string();
      case "t":
        return this.#literal("true", true);
      case "f":
        return this.#literal("false", false);
      case "n":
        return this.#literal("null", null);
      default:
        return this.#number();
    }
  }

  end(): void {
    this.#space();
    if (this.#at !== this.#text.length) this.#fail();
  }

  #object(): Record<string, unknown> {
    // Keys are defined, not assigned: a "__proto__" key is an own property,
    // as with JSON.parse.
    const object: Record<string, unknown> = {};
    this.#at++;
    this.#space();
    if (this.#text[this.#at] === "}") {
      this.#at++;
      return object;
    }
    for (;;) {
      this.#space();
      if (this.#text[this.#at] !== '"') this.#fail();
      const key = this.#string();
      this.#expect(":");
      Object.defineProperty(object, key, {
        value: this.value(),
        writable: true,
        enumerable: true,
        configurable: true,
      });
      if (this.#next(",", "}") === "}") return object;
    }
  }

  #array(): unknown[] {
    const array: unknown[] = [];
    this.#at++;
    this.#space();
    if (this.#text[this.#at] === "]") {
      this.#at++;
      return array;
    }
    for (;;) {
      array.push(this.value());
      if (this.#next(",", "]") === "]") return array;
    }
  }

  #string(): string {
    const text = this.#text;
    let out = "";
    let from = ++this.#at;
    for (;;) {
      const code = text.charCodeAt(this.#at);
      if (Number.isNaN(code) || code < 0x20) this.#fail();
      if (code === 0x22) { // "
        out += text.slice(from, this.#at++);
        return out;
      }
      if (code !== 0x5c) { // \
        this.#at++;
        continue;
      }
      out += text.slice(from, this.#at);
      const escape = text[this.#at + 1];
      if (escape === "u") {
        const hex = text.slice(this.#at + 2, this.#at + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.#fail();
        out += String.fromCharCode(parseInt(hex, 16));
        this.#at += 6;
      } else {
        const decoded = ESCAPES[escape ?? ""];
        if (decoded === undefined) this.#fail();
        out += decoded;
        this.#at += 2;
      }
      from = this.#at;
    }
  }

  #number(): number {
    NUMBER.lastIndex = this.#at;
    const match = NUMBER.exec(this.#text);
    if (!match) this.#fail();
    this.#at += match[0].length;
    return Number(match[0]);
  }

  #literal<T>(word: string, value: T): T {
    if (!this.#text.startsWith(word, this.#at)) this.#fail();
    this.#at += word.length;
    return value;
  }

  #space(): void {
    while (" \t\n\r".includes(this.#text[this.#at] ?? "x")) this.#at++;
  }

  #expect(char: string): void {
    this.#space();
    if (this.#text[this.#at] !== char) this.#fail();
    this.#at++;
  }

  #next(separator: string, close: string): string {
    this.#space();
    const char = this.#text[this.#at];
    if (char !== separator && char !== close) this.#fail();
    this.#at++;
    return char;
  }

  #fail(): never {
    throw new SyntaxError(`invalid JSON at position ${this.#at}`);
  }
}

const ESCAPES: Readonly<Record<string, string>> = {
  '"': '"',
  "\\": "\\",
  "/": "/",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
};

/** RFC 8259 §6, anchored where the reader is (sticky). */
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
