import { EngineError, describeValue } from '../errors.js';
import { byteLevelToBytes, bytesToByteLevel } from './byte-level.js';
import { compileTokenizerRegex, GPT2_PATTERN, matchSpans } from './regex.js';

/**
 * The pieces of a Hugging Face `tokenizers` pipeline this engine implements, built from the JSON objects of a
 * `tokenizer.json`. Each builder throws `UNSUPPORTED_TOKENIZER` naming the JSON path and `type` it cannot run.
 */

type Json = Record<string, unknown>;

function unsupported(field: string, what: unknown): EngineError {
  return new EngineError('UNSUPPORTED_TOKENIZER', `tokenizer.json ${field}: unsupported ${describeValue(what)}`, { field });
}

function asObject(value: unknown, field: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new EngineError('MALFORMED', `tokenizer.json ${field} must be an object, got ${describeValue(value)}`, { field });
  }
  return value as Json;
}

function str(obj: Json, key: string, field: string, fallback?: string): string {
  const v = obj[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
  } else if (typeof v === 'string') return v;
  throw new EngineError('MALFORMED', `tokenizer.json ${field}.${key} must be a string, got ${describeValue(v)}`, { field: `${field}.${key}` });
}

function bool(obj: Json, key: string, fallback: boolean): boolean {
  const v = obj[key];
  return typeof v === 'boolean' ? v : fallback;
}

function int(obj: Json, key: string, field: string, fallback: number): number {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  throw new EngineError('MALFORMED', `tokenizer.json ${field}.${key} must be a non-negative integer, got ${describeValue(v)}`, {
    field: `${field}.${key}`,
  });
}

/** `{String: s}` or `{Regex: r}` → a global RegExp. */
function patternRegex(value: unknown, field: string): RegExp {
  const p = asObject(value, field);
  if (typeof p.String === 'string') return new RegExp(p.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gu');
  if (typeof p.Regex === 'string') return compileTokenizerRegex(p.Regex, field);
  throw new EngineError('MALFORMED', `tokenizer.json ${field} must be {"String": ...} or {"Regex": ...}, got ${describeValue(value)}`, {
    field,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Normalizers: string → string, applied to each text segment between added tokens.

/** A normalizer: one segment of input text → normalized text. */
export type Normalizer = (text: string) => string;

/** Build a normalizer from `tokenizer.json`'s `normalizer` (null → identity). */
export function buildNormalizer(value: unknown, field = 'normalizer'): Normalizer {
  if (value === null || value === undefined) return (t) => t;
  const n = asObject(value, field);
  switch (n.type) {
    case 'Sequence': {
      const list = n.normalizers;
      if (!Array.isArray(list)) throw unsupported(`${field}.normalizers`, list);
      const parts = list.map((x, i) => buildNormalizer(x, `${field}.normalizers[${i}]`));
      return (t) => parts.reduce((acc, f) => f(acc), t);
    }
    case 'Prepend': {
      const prepend = str(n, 'prepend', field);
      return (t) => (t.length === 0 ? t : prepend + t);
    }
    case 'Replace': {
      const re = patternRegex(n.pattern, `${field}.pattern`);
      const content = str(n, 'content', field);
      return (t) => t.replace(re, () => content);
    }
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD': {
      const form = n.type;
      return (t) => t.normalize(form);
    }
    case 'Lowercase':
      return (t) => t.toLowerCase();
    case 'Strip': {
      const left = bool(n, 'strip_left', true);
      const right = bool(n, 'strip_right', true);
      return (t) => (left && right ? t.trim() : left ? t.trimStart() : right ? t.trimEnd() : t);
    }
    default:
      throw unsupported(`${field}.type`, n.type);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Pre-tokenizers: a segment → words for the model.

/** A pre-tokenizer: words in, finer words out. `first` tells whether the segment starts the input text. */
export type PreTokenizer = (words: string[], first: boolean) => string[];

type SplitBehavior = 'Removed' | 'Isolated' | 'MergedWithPrevious' | 'MergedWithNext' | 'Contiguous';

/**
 * Split a word on `re` with Hugging Face `SplitDelimiterBehavior` semantics (`invert` swaps match / gap): a match
 * merges into the preceding (following) piece only when that piece is not itself a match.
 */
export function splitWith(word: string, re: RegExp, behavior: SplitBehavior, invert = false): string[] {
  const spans = matchSpans(word, re).map(([s, e, m]) => [word.slice(s, e), invert ? !m : m] as const);
  const out: string[] = [];
  let previousMatch = false;
  switch (behavior) {
    case 'Removed':
      for (const [piece, isMatch] of spans) if (!isMatch) out.push(piece);
      break;
    case 'Isolated':
      for (const [piece] of spans) out.push(piece);
      break;
    case 'MergedWithPrevious':
      for (const [piece, isMatch] of spans) {
        if (isMatch && !previousMatch && out.length > 0) out[out.length - 1] += piece;
        else out.push(piece);
        previousMatch = isMatch;
      }
      break;
    case 'MergedWithNext':
      for (let i = spans.length - 1; i >= 0; i--) {
        const [piece, isMatch] = spans[i]!;
        if (isMatch && !previousMatch && out.length > 0) out[out.length - 1] = piece + out[out.length - 1]!;
        else out.push(piece);
        previousMatch = isMatch;
      }
      out.reverse();
      break;
    case 'Contiguous':
      for (const [piece, isMatch] of spans) {
        if (isMatch && previousMatch && out.length > 0) out[out.length - 1] += piece;
        else out.push(piece);
        previousMatch = isMatch;
      }
      break;
  }
  return out.filter((w) => w.length > 0);
}

const BEHAVIORS = new Set(['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous']);

/** Build a pre-tokenizer from `tokenizer.json`'s `pre_tokenizer` (null → the whole segment is one word). */
export function buildPreTokenizer(value: unknown, field = 'pre_tokenizer'): PreTokenizer {
  if (value === null || value === undefined) return (w) => w;
  const p = asObject(value, field);
  switch (p.type) {
    case 'Sequence': {
      const list = p.pretokenizers;
      if (!Array.isArray(list)) throw unsupported(`${field}.pretokenizers`, list);
      const parts = list.map((x, i) => buildPreTokenizer(x, `${field}.pretokenizers[${i}]`));
      return (w, first) => parts.reduce((acc, f) => f(acc, first), w);
    }
    case 'ByteLevel': {
      const addPrefixSpace = bool(p, 'add_prefix_space', true);
      const useRegex = bool(p, 'use_regex', true);
      const re = useRegex ? compileTokenizerRegex(GPT2_PATTERN) : undefined;
      return (words) =>
        words.flatMap((w, i) => {
          const text = addPrefixSpace && i === 0 && !w.startsWith(' ') ? ' ' + w : w;
          const pieces = re ? splitWith(text, re, 'Isolated') : [text];
          return pieces.map(bytesToByteLevel);
        });
    }
    case 'Split': {
      const re = patternRegex(p.pattern, `${field}.pattern`);
      const behavior = str(p, 'behavior', field, 'Isolated');
      if (!BEHAVIORS.has(behavior)) throw unsupported(`${field}.behavior`, behavior);
      const invert = bool(p, 'invert', false);
      return (words) => words.flatMap((w) => splitWith(w, re, behavior as SplitBehavior, invert));
    }
    case 'Metaspace': {
      const replacement = str(p, 'replacement', field, '▁');
      const scheme = metaspaceScheme(p, field);
      const split = bool(p, 'split', true);
      return (words, first) =>
        words.flatMap((w, i) => {
          let text = w.replaceAll(' ', replacement);
          const prepend = scheme === 'always' || (scheme === 'first' && first && i === 0);
          if (prepend && !text.startsWith(replacement)) text = replacement + text;
          if (!split) return [text];
          const out: string[] = [];
          let cur = '';
          for (const ch of text) {
            if (ch === replacement && cur.length > 0) {
              out.push(cur);
              cur = '';
            }
            cur += ch;
          }
          if (cur) out.push(cur);
          return out;
        });
    }
    case 'Digits': {
      const re = bool(p, 'individual_digits', false) ? /\p{N}/gu : /\p{N}+/gu;
      return (words) => words.flatMap((w) => splitWith(w, re, 'Isolated'));
    }
    case 'Whitespace':
      return (words) => words.flatMap((w) => splitWith(w, /\w+|[^\w\s]+/gu, 'Removed', true));
    case 'WhitespaceSplit':
      return (words) => words.flatMap((w) => w.split(/\s+/u).filter((x) => x.length > 0));
    default:
      throw unsupported(`${field}.type`, p.type);
  }
}

function metaspaceScheme(p: Json, field: string): 'always' | 'first' | 'never' {
  const scheme = p.prepend_scheme;
  if (scheme === undefined || scheme === null) return bool(p, 'add_prefix_space', true) ? 'always' : 'never';
  if (scheme === 'always' || scheme === 'first' || scheme === 'never') return scheme;
  throw unsupported(`${field}.prepend_scheme`, scheme);
}

// ---------------------------------------------------------------------------------------------------------------
// Decoders: token strings → text pieces (the final text is their concatenation).

/** A decoder step: token strings → transformed strings. */
export type Decoder = (tokens: string[]) => string[];

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();
const lossyUtf8 = new TextDecoder('utf-8');

/** Build a decoder from `tokenizer.json`'s `decoder` (null → tokens joined with spaces, as in HF). */
export function buildDecoder(value: unknown, field = 'decoder'): Decoder {
  if (value === null || value === undefined) return (tokens) => [tokens.join(' ')];
  const d = asObject(value, field);
  switch (d.type) {
    case 'Sequence': {
      const list = d.decoders;
      if (!Array.isArray(list)) throw unsupported(`${field}.decoders`, list);
      const parts = list.map((x, i) => buildDecoder(x, `${field}.decoders[${i}]`));
      return (tokens) => {
        let out = tokens;
        for (let i = 0; i < parts.length; i++) out = parts[i]!(out);
        return out;
      };
    }
    case 'ByteLevel':
      return (tokens) => {
        const bytes: number[] = [];
        for (const t of tokens) {
          const b = byteLevelToBytes(t);
          if (b) for (const x of b) bytes.push(x);
          else for (const x of utf8Encoder.encode(t)) bytes.push(x);
        }
        return [lossyUtf8.decode(Uint8Array.from(bytes))];
      };
    case 'ByteFallback':
      return (tokens) => {
        const out: string[] = [];
        let pending: number[] = [];
        const flush = (): void => {
          if (pending.length === 0) return;
          try {
            out.push(fatalUtf8.decode(Uint8Array.from(pending)));
          } catch {
            for (let i = 0; i < pending.length; i++) out.push('\uFFFD');
          }
          pending = [];
        };
        for (let i = 0; i < tokens.length; i++) {
          const t = tokens[i]!;
          const m = t.length === 6 ? /^<0x([0-9A-Fa-f]{2})>$/.exec(t) : null;
          if (m) pending.push(parseInt(m[1]!, 16));
          else {
            flush();
            out.push(t);
          }
        }
        flush();
        return out;
      };
    case 'Fuse':
      return (tokens) => [tokens.join('')];
    case 'Replace': {
      const replace = replaceStep(d, field);
      return (tokens) => tokens.map(replace);
    }
    case 'Strip': {
      const strip = stripStep(d, field);
      return (tokens) => tokens.map(strip);
    }
    case 'Metaspace': {
      const replacement = str(d, 'replacement', field, '▁');
      const scheme = metaspaceScheme(d, field);
      return (tokens) =>
        tokens.map((t, i) => {
          const text = t.replaceAll(replacement, ' ');
          return i === 0 && scheme !== 'never' && text.startsWith(' ') ? text.slice(1) : text;
        });
    }
    default:
      throw unsupported(`${field}.type`, d.type);
  }
}

/** A decoder `Replace` step on one token string. */
function replaceStep(d: Json, field: string): (t: string) => string {
  const re = patternRegex(d.pattern, `${field}.pattern`);
  const content = str(d, 'content', field);
  return literalReplacer(d.pattern, content) ?? ((t) => t.replace(re, () => content));
}

/**
 * A decoder `Replace` of a `{"String": ...}` pattern as a plain `replaceAll` (the regex of {@link patternRegex} gives
 * the same text, slower: decoding runs once a generated token), or undefined for a regex pattern. Only for a pattern
 * without surrogate code units, whose code-unit matches are exactly the `u`-mode regex's code-point matches.
 */
function literalReplacer(pattern: unknown, content: string): ((t: string) => string) | undefined {
  const p = (pattern as Json).String;
  if (typeof p !== 'string' || p.length === 0 || /[\uD800-\uDFFF]/.test(p)) return undefined;
  // A replacement string is taken literally by replaceAll unless it has `$` patterns.
  return content.includes('$') ? (t) => t.replaceAll(p, () => content) : (t) => t.replaceAll(p, content);
}

/** A decoder `Strip` step on one token string. */
function stripStep(d: Json, field: string): (t: string) => string {
  const content = str(d, 'content', field);
  const start = int(d, 'start', field, 0);
  const stop = int(d, 'stop', field, 0);
  return isOneCodePoint(content) ? (t) => stripCodePoint(t, content, start, stop) : (t) => stripChars(t, content, start, stop);
}

/** Whether `s` is exactly one code point (one character that is not a surrogate, or one surrogate pair). */
function isOneCodePoint(s: string): boolean {
  const c = s.charCodeAt(0);
  if (s.length === 1) return c < 0xd800 || c > 0xdfff;
  return s.length === 2 && c >= 0xd800 && c <= 0xdbff && s.charCodeAt(1) >= 0xdc00 && s.charCodeAt(1) <= 0xdfff;
}

/** The decoder `Strip`: up to `start` leading and `stop` trailing characters (code points) equal to `content` removed. */
function stripChars(t: string, content: string, start: number, stop: number): string {
  const chars = [...t];
  let a = 0;
  let b = chars.length;
  while (a < start && a < b && chars[a] === content) a++;
  while (chars.length - b < stop && b > a && chars[b - 1] === content) b--;
  return chars.slice(a, b).join('');
}

/**
 * {@link stripChars} for a `content` of one code point ({@link isOneCodePoint}), on code units: a match of it starts
 * and ends on character boundaries, so no splitting into characters is needed.
 */
function stripCodePoint(t: string, content: string, start: number, stop: number): string {
  let a = 0;
  for (let n = 0; n < start && t.startsWith(content, a); n++) a += content.length;
  let b = t.length;
  for (let n = 0; n < stop && b > a && t.endsWith(content, b); n++) b -= content.length;
  return a === 0 && b === t.length ? t : t.slice(a, b);
}

/** How one model piece takes part in a two-token window `[prev, piece]` (see {@link AppendRule}). */
interface PieceAppend {
  /**
   * The text the piece adds after a `prev` that leads: `decode([prev, piece])` is `decode([prev]) + tail`. Undefined
   * when that depends on the neighbours (a byte-fallback piece, bytes that are not complete UTF-8 on their own).
   */
  readonly tail: string | undefined;
  /** Whether the piece, as `prev`, is followed by exactly the tail of every piece that has one. */
  readonly leads: boolean;
}

/**
 * How a decoder's text grows by one token where that depends on the token alone: incremental detokenization then
 * appends the token's tail instead of decoding a window of ids (see `Tokenizer.appendedText`).
 */
export type AppendRule = (piece: string) => PieceAppend;

/** A byte-fallback piece (`<0xNN>`), which the `ByteFallback` decoder merges with its neighbours. */
const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

/**
 * The {@link AppendRule} of `tokenizer.json`'s `decoder` (validated by {@link buildDecoder} first), for the decoders
 * whose text is a concatenation of per-token texts past the first token; undefined for any other decoder:
 * - `ByteLevel` alone: the bytes of the pieces are concatenated and decoded as UTF-8, so a piece whose bytes are
 *   complete UTF-8 adds its own text (unless it starts with a byte-order mark, which the decoder drops only at the
 *   start of the text) after a piece whose bytes are complete UTF-8;
 * - `Metaspace` alone: each piece maps to its text on its own (only the first one loses a leading space);
 * - SentencePiece-style `Replace`* (per piece), then optionally `ByteFallback`, then optionally `Fuse` and a `Strip`
 *   of leading characters only: a piece that is not a byte after the replacements adds its replaced text after a
 *   piece whose own decoded text is not empty (the strip stops inside that piece).
 */
export function buildAppendRule(value: unknown): AppendRule | undefined {
  const steps: Json[] = [];
  const walk = (v: unknown): void => {
    if (v === null || v === undefined) return;
    const d = v as Json;
    if (d.type === 'Sequence' && Array.isArray(d.decoders)) d.decoders.forEach(walk);
    else steps.push(d);
  };
  walk(value);
  if (steps.length === 0) return undefined; // no decoder: the pieces are joined with spaces
  if (steps.length === 1 && steps[0]!.type === 'ByteLevel') return byteLevelAppend;
  if (steps.length === 1 && steps[0]!.type === 'Metaspace') {
    const replacement = str(steps[0]!, 'replacement', 'decoder', '▁');
    return (piece) => ({ tail: piece.replaceAll(replacement, ' '), leads: true });
  }
  const replaces: ((t: string) => string)[] = [];
  let i = 0;
  for (; i < steps.length && steps[i]!.type === 'Replace'; i++) replaces.push(replaceStep(steps[i]!, 'decoder'));
  const byteFallback = steps[i]?.type === 'ByteFallback';
  if (byteFallback) i++;
  let strip = (t: string): string => t;
  if (steps[i]?.type === 'Fuse') {
    i++;
    if (steps[i]?.type === 'Strip' && int(steps[i]!, 'stop', 'decoder', 0) === 0) strip = stripStep(steps[i++]!, 'decoder');
  }
  if (i !== steps.length) return undefined;
  return (piece) => {
    let t = piece;
    for (let k = 0; k < replaces.length; k++) t = replaces[k]!(t);
    // Not a byte: ByteFallback passes it as it is, so decode([piece]) is strip(t).
    return byteFallback && BYTE_PIECE.test(t) ? { tail: undefined, leads: false } : { tail: t, leads: strip(t) !== '' };
  };
}

/** {@link buildAppendRule} of a `ByteLevel` decoder. */
function byteLevelAppend(piece: string): PieceAppend {
  const bytes = Uint8Array.from(byteLevelToBytes(piece) ?? utf8Encoder.encode(piece));
  let text: string;
  try {
    text = fatalUtf8.decode(bytes);
  } catch {
    return { tail: undefined, leads: false }; // not complete UTF-8 on its own
  }
  // A leading byte-order mark is dropped by the decoder only at the start of the text (fatalUtf8 drops it too).
  const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf;
  return { tail: bom ? undefined : text, leads: true };
}

/** The raw bytes of one model piece (see {@link buildTokenBytes}). */
export type TokenBytes = (piece: string) => Uint8Array;

/**
 * The raw bytes a model piece stands for, from `tokenizer.json`'s `decoder`, independent of its neighbours (so a
 * piece that holds part of a multi-byte UTF-8 character gives exactly those bytes, never U+FFFD):
 * - a `ByteLevel` decoder anywhere: GPT-2's byte-to-unicode map inverted (a piece with a character outside the map
 *   gives its own UTF-8, as the ByteLevel decoder does);
 * - otherwise (SentencePiece-style): a `<0xNN>` piece under a `ByteFallback` decoder is the byte `NN`; any other piece
 *   is the UTF-8 of the piece after the decoder's `Replace` steps and `Metaspace` replacement (`▁` → space), without
 *   the sequence-level `Strip` of a leading space.
 */
export function buildTokenBytes(value: unknown, field = 'decoder'): TokenBytes {
  const steps: Json[] = [];
  const walk = (v: unknown, f: string): void => {
    if (v === null || v === undefined) return;
    const d = asObject(v, f);
    if (d.type === 'Sequence' && Array.isArray(d.decoders)) d.decoders.forEach((x, i) => walk(x, `${f}.decoders[${i}]`));
    else steps.push(d);
  };
  walk(value, field);
  if (steps.some((d) => d.type === 'ByteLevel')) {
    return (piece) => Uint8Array.from(byteLevelToBytes(piece) ?? utf8Encoder.encode(piece));
  }
  const byteFallback = steps.some((d) => d.type === 'ByteFallback');
  const rewrites: Array<(t: string) => string> = [];
  steps.forEach((d, i) => {
    if (d.type === 'Replace') {
      const re = patternRegex(d.pattern, `${field}[${i}].pattern`);
      const content = str(d, 'content', field);
      rewrites.push((t) => t.replace(re, () => content));
    } else if (d.type === 'Metaspace') {
      const replacement = str(d, 'replacement', field, '▁');
      rewrites.push((t) => t.replaceAll(replacement, ' '));
    }
  });
  return (piece) => {
    const m = byteFallback && piece.length === 6 ? /^<0x([0-9A-Fa-f]{2})>$/.exec(piece) : null;
    if (m) return Uint8Array.of(parseInt(m[1]!, 16));
    return utf8Encoder.encode(rewrites.reduce((t, f) => f(t), piece));
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Post-processor: the special tokens added around an encoded sequence.

/** Ids to add before and after a single encoded sequence. */
export interface SpecialTokenTemplate {
  readonly prefix: readonly number[];
  readonly suffix: readonly number[];
}

/** Interpret `tokenizer.json`'s `post_processor` for single sequences (null → nothing added). */
export function buildPostProcessor(value: unknown, field = 'post_processor'): SpecialTokenTemplate {
  if (value === null || value === undefined) return { prefix: [], suffix: [] };
  const p = asObject(value, field);
  switch (p.type) {
    case 'ByteLevel':
      return { prefix: [], suffix: [] };
    case 'Sequence': {
      const list = p.processors;
      if (!Array.isArray(list)) throw unsupported(`${field}.processors`, list);
      const parts = list.map((x, i) => buildPostProcessor(x, `${field}.processors[${i}]`));
      return { prefix: parts.flatMap((x) => x.prefix), suffix: parts.flatMap((x) => x.suffix) };
    }
    case 'TemplateProcessing': {
      const single = p.single;
      const specials = asObject(p.special_tokens ?? {}, `${field}.special_tokens`);
      if (!Array.isArray(single)) throw unsupported(`${field}.single`, single);
      const prefix: number[] = [];
      const suffix: number[] = [];
      let seenSequence = false;
      single.forEach((piece, i) => {
        const item = asObject(piece, `${field}.single[${i}]`);
        if (item.Sequence !== undefined) {
          if (seenSequence) throw unsupported(`${field}.single`, single);
          seenSequence = true;
          return;
        }
        const special = asObject(item.SpecialToken, `${field}.single[${i}].SpecialToken`);
        const name = str(special, 'id', `${field}.single[${i}].SpecialToken`);
        const entry = asObject(specials[name], `${field}.special_tokens.${name}`);
        const ids = entry.ids;
        if (!Array.isArray(ids) || !ids.every((x) => Number.isInteger(x) && (x as number) >= 0)) {
          throw new EngineError('MALFORMED', `tokenizer.json ${field}.special_tokens.${name}.ids must be token ids`, {
            field: `${field}.special_tokens.${name}.ids`,
          });
        }
        (seenSequence ? suffix : prefix).push(...(ids as number[]));
      });
      if (!seenSequence) throw unsupported(`${field}.single`, single);
      return { prefix, suffix };
    }
    default:
      throw unsupported(`${field}.type`, p.type);
  }
}
