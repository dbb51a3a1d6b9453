import { EngineError } from '../errors.js';

/** GPT-2's pre-tokenization pattern (also HF `ByteLevel` with `use_regex: true`). */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/** Llama 3's pre-tokenization pattern (tokenizer.json `Split` regex; GGUF `tokenizer.ggml.pre` = `llama-bpe`). */
export const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** Qwen2's pre-tokenization pattern (single digits; GGUF `tokenizer.ggml.pre` = `qwen2`). */
export const QWEN2_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Index of the `)` closing the group whose body starts at `start`. */
function groupEnd(pattern: string, start: number): number {
  let depth = 1;
  let inClass = false;
  for (let i = start; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')' && --depth === 0) return i;
  }
  return -1;
}

/**
 * Compile a tokenizer regex written for Oniguruma / Rust `regex` (as found in tokenizer.json) into a JavaScript
 * `RegExp` with flags `gu`. Scoped case-insensitive groups `(?i:...)` are rewritten letter by letter
 * (`'s` → `'[sS]`), since Node 20 lacks regexp modifiers.
 * @throws EngineError `UNSUPPORTED_TOKENIZER` for constructs JavaScript cannot express (atomic groups and
 *   possessive quantifiers fail to compile; character classes inside `(?i:...)` are refused).
 */
export function compileTokenizerRegex(pattern: string, field = 'pattern'): RegExp {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    if (pattern.startsWith('(?i:', i)) {
      const end = groupEnd(pattern, i + 4);
      if (end < 0) break;
      const body = pattern.slice(i + 4, end);
      if (/[[\\]/.test(body)) {
        throw new EngineError('UNSUPPORTED_TOKENIZER', `${field}: case-insensitive group with classes or escapes is not supported: ${body}`, {
          field,
        });
      }
      out += '(?:' + body.replace(/[a-zA-Z]/g, (ch) => `[${ch.toLowerCase()}${ch.toUpperCase()}]`) + ')';
      i = end;
      continue;
    }
    const c = pattern[i]!;
    if (c === '\\' && i + 1 < pattern.length) {
      out += c + pattern[i + 1]!;
      i++;
      continue;
    }
    out += c;
  }
  try {
    return new RegExp(out, 'gu');
  } catch (cause) {
    throw new EngineError('UNSUPPORTED_TOKENIZER', `${field}: cannot compile regex ${pattern} (${(cause as Error).message})`, {
      field,
      cause,
    });
  }
}

/** `[start, end, isMatch]` spans covering `text`: the non-empty matches of `re` and the text between them. */
export function matchSpans(text: string, re: RegExp): Array<[number, number, boolean]> {
  const spans: Array<[number, number, boolean]> = [];
  let last = 0;
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    if (m[0].length === 0) {
      if (m.index >= text.length) break;
      re.lastIndex = m.index + ((text.codePointAt(m.index) ?? 0) > 0xffff ? 2 : 1);
      continue;
    }
    if (m.index > last) spans.push([last, m.index, false]);
    spans.push([m.index, m.index + m[0].length, true]);
    last = m.index + m[0].length;
  }
  if (last < text.length) spans.push([last, text.length, false]);
  return spans;
}
