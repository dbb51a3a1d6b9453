import { EngineError, describeValue } from '../errors.js';
import { BpeModel } from './bpe.js';
import {
  buildAppendRule,
  buildDecoder,
  buildNormalizer,
  buildPostProcessor,
  buildPreTokenizer,
  buildTokenBytes,
  type AppendRule,
  type Decoder,
  type Normalizer,
  type PreTokenizer,
  type TokenBytes,
} from './components.js';
import { DecodeStream } from './decode-stream.js';

/** A token added on top of the model vocabulary (`tokenizer.json` `added_tokens`). */
export interface AddedToken {
  readonly id: number;
  readonly content: string;
  /** Special tokens are skipped by `decode(ids, { skipSpecialTokens: true })`. */
  readonly special: boolean;
  /** Absorb whitespace on the left / right when matched in text. */
  readonly lstrip: boolean;
  readonly rstrip: boolean;
  /** Match only as a whole word. */
  readonly singleWord: boolean;
}

/** The raw JSON of a `tokenizer.json` (validated when a {@link Tokenizer} is built from it). */
export type TokenizerJson = Record<string, unknown>;

/**
 * The fields of `tokenizer_config.json` the engine reads. Token fields may be a string or an AddedToken object
 * `{ content: string, ... }`.
 */
export interface TokenizerConfigJson {
  bos_token?: unknown;
  eos_token?: unknown;
  unk_token?: unknown;
  pad_token?: unknown;
  /** When a boolean, forces the BOS token on (true) or off (false) regardless of the post-processor. */
  add_bos_token?: unknown;
  /** When a boolean, forces the EOS token on (true) or off (false) regardless of the post-processor. */
  add_eos_token?: unknown;
  chat_template?: unknown;
  model_max_length?: unknown;
  [key: string]: unknown;
}

/** Options of {@link Tokenizer.fromJson}. */
export interface TokenizerOptions {
  /** Parsed `tokenizer_config.json`. */
  config?: TokenizerConfigJson | undefined;
  /** BOS id from the model config, used when `tokenizer_config.json` names none. */
  bosTokenId?: number | undefined;
  /** EOS ids from `generation_config.json` / `config.json`; they take precedence over `tokenizer_config.json`. */
  eosTokenIds?: readonly number[] | undefined;
  /** File name for error messages. */
  file?: string;
}

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Add the post-processor's special tokens (BOS, ...). Default true, as in Hugging Face. */
  addSpecialTokens?: boolean;
}

/** Options of {@link Tokenizer.decode} and {@link Tokenizer.decodeStream}. */
export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, chat markers) from the text. Default false, as in Hugging Face. */
  skipSpecialTokens?: boolean;
}

function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const WORD_CHAR = /[\p{L}\p{N}_]/u;
const WHITESPACE = /\s/u;

/**
 * A text tokenizer with Hugging Face `tokenizers` semantics for BPE models: byte-level BPE (GPT-2, Llama 3,
 * Qwen2, SmolLM) and SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama, Mistral, llama2.c, GGUF
 * `llama` vocabularies, which are converted to the same form). Build one with {@link Tokenizer.fromJson}, or get
 * one from `loadModel` / `loadTokenizer`.
 */
export class Tokenizer {
  /** Number of ids (model vocabulary plus added tokens): every id is in `[0, vocabSize)`. */
  readonly vocabSize: number;
  /** BOS id, when the tokenizer has one. */
  readonly bosTokenId: number | undefined;
  /** EOS ids (generation stops on any of them); may be empty. */
  readonly eosTokenIds: readonly number[];
  readonly unkTokenId: number | undefined;
  readonly padTokenId: number | undefined;
  /** Token strings of BOS / EOS / UNK / PAD as named by the configuration (for chat templates). */
  readonly specialTokens: Readonly<{ bos?: string; eos?: string; unk?: string; pad?: string }>;
  /** Whether `encode(text)` (with special tokens) starts with BOS. */
  readonly addsBos: boolean;
  /** Whether `encode(text)` (with special tokens) ends with EOS. */
  readonly addsEos: boolean;
  /** Added tokens in id order. */
  readonly addedTokens: readonly AddedToken[];
  /** Ids of the special added tokens. */
  readonly specialTokenIds: ReadonlySet<number>;
  /** The `tokenizer.json` object this tokenizer was built from (written back by `convert`). */
  readonly json: Readonly<TokenizerJson>;
  /** The `tokenizer_config.json` fields it was built with. */
  readonly config: Readonly<TokenizerConfigJson>;

  private readonly idToPiece: Array<string | undefined>;
  private readonly pieceToId: Map<string, number>;
  private readonly model: BpeModel;
  private readonly normalizer: Normalizer;
  private readonly preTokenizer: PreTokenizer;
  private readonly decoder: Decoder;
  private readonly pieceBytes: TokenBytes;
  private readonly appendRule: AppendRule | undefined;
  private readonly addedIds: ReadonlySet<number>;
  private readonly prefix: readonly number[];
  private readonly suffix: readonly number[];
  private readonly addedRegex: RegExp | undefined;
  private readonly addedByContent: Map<string, AddedToken>;

  private constructor(json: TokenizerJson, options: TokenizerOptions) {
    const file = options.file ?? 'tokenizer.json';
    const bad = (field: string, message: string): EngineError =>
      new EngineError('MALFORMED', `${file}: ${field} ${message}`, { file, field });
    this.json = json;
    this.config = options.config ?? {};
    const model = json.model;
    if (typeof model !== 'object' || model === null) throw bad('model', 'is missing');
    const m = model as Record<string, unknown>;
    const type = m.type ?? (m.merges !== undefined ? 'BPE' : undefined);
    if (type !== 'BPE') {
      throw new EngineError('UNSUPPORTED_TOKENIZER', `${file}: model.type ${describeValue(type)} is not supported (only BPE)`, {
        file,
        field: 'model.type',
      });
    }
    for (const key of ['continuing_subword_prefix', 'end_of_word_suffix'] as const) {
      if (m[key] !== undefined && m[key] !== null && m[key] !== '') {
        throw new EngineError('UNSUPPORTED_TOKENIZER', `${file}: model.${key} ${describeValue(m[key])} is not supported`, {
          file,
          field: `model.${key}`,
        });
      }
    }
    if (typeof m.dropout === 'number' && m.dropout > 0) {
      throw new EngineError('UNSUPPORTED_TOKENIZER', `${file}: model.dropout ${m.dropout} (BPE dropout) is not supported at inference`, {
        file,
        field: 'model.dropout',
      });
    }
    if (typeof m.vocab !== 'object' || m.vocab === null || Array.isArray(m.vocab)) throw bad('model.vocab', 'must be an object');
    const vocab = new Map<string, number>();
    const idToPiece: Array<string | undefined> = [];
    for (const [piece, id] of Object.entries(m.vocab as Record<string, unknown>)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 1 << 24) {
        throw bad(`model.vocab[${JSON.stringify(piece)}]`, `must be a token id, got ${describeValue(id)}`);
      }
      vocab.set(piece, id);
      idToPiece[id] = piece;
    }
    const merges: Array<readonly [string, string]> = [];
    const rawMerges = m.merges ?? [];
    if (!Array.isArray(rawMerges)) throw bad('model.merges', 'must be an array');
    rawMerges.forEach((entry: unknown, i) => {
      if (typeof entry === 'string') {
        const parts = entry.split(' ');
        if (parts.length !== 2) throw bad(`model.merges[${i}]`, `${JSON.stringify(entry)} is not "left right"`);
        merges.push([parts[0]!, parts[1]!]);
      } else if (Array.isArray(entry) && entry.length === 2 && typeof entry[0] === 'string' && typeof entry[1] === 'string') {
        merges.push([entry[0], entry[1]]);
      } else throw bad(`model.merges[${i}]`, `must be "left right" or [left, right], got ${describeValue(entry)}`);
    });
    const unkToken = typeof m.unk_token === 'string' ? m.unk_token : undefined;
    try {
      this.model = new BpeModel({
        vocab,
        merges,
        unkToken,
        fuseUnk: m.fuse_unk === true,
        byteFallback: m.byte_fallback === true,
        ignoreMerges: m.ignore_merges === true,
      });
    } catch (e) {
      if (e instanceof EngineError) throw new EngineError(e.code, `${file}: ${e.message}`, { file, field: e.field, cause: e });
      throw e;
    }

    const added: AddedToken[] = [];
    const rawAdded = json.added_tokens ?? [];
    if (!Array.isArray(rawAdded)) throw bad('added_tokens', 'must be an array');
    rawAdded.forEach((entry: unknown, i) => {
      const t = entry as Record<string, unknown>;
      if (typeof t !== 'object' || t === null || typeof t.content !== 'string' || t.content.length === 0) {
        throw bad(`added_tokens[${i}]`, `must have a non-empty content string, got ${describeValue(entry)}`);
      }
      if (typeof t.id !== 'number' || !Number.isInteger(t.id) || t.id < 0 || t.id > 1 << 24) {
        throw bad(`added_tokens[${i}].id`, `must be a token id, got ${describeValue(t.id)}`);
      }
      added.push({
        id: t.id,
        content: t.content,
        special: t.special === true,
        lstrip: t.lstrip === true,
        rstrip: t.rstrip === true,
        singleWord: t.single_word === true,
      });
      idToPiece[t.id] = t.content;
    });
    added.sort((a, b) => a.id - b.id);
    this.addedTokens = added;
    this.addedByContent = new Map(added.map((t) => [t.content, t]));
    this.specialTokenIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    this.idToPiece = idToPiece;
    this.pieceToId = new Map(vocab);
    for (const t of added) this.pieceToId.set(t.content, t.id);
    for (let id = 0; id < idToPiece.length; id++) {
      if (idToPiece[id] === undefined) throw bad('model.vocab', `has no token for id ${id} (ids must be contiguous)`);
    }
    this.vocabSize = idToPiece.length;
    this.addedRegex =
      added.length === 0
        ? undefined
        : new RegExp(
            [...added]
              .sort((a, b) => b.content.length - a.content.length)
              .map((t) => escapeRegex(t.content))
              .join('|'),
            'gu',
          );

    this.normalizer = wrap(file, () => buildNormalizer(json.normalizer));
    this.preTokenizer = wrap(file, () => buildPreTokenizer(json.pre_tokenizer));
    this.decoder = wrap(file, () => buildDecoder(json.decoder));
    this.pieceBytes = wrap(file, () => buildTokenBytes(json.decoder));
    this.appendRule = buildAppendRule(json.decoder);
    this.addedIds = new Set(added.map((t) => t.id));
    let { prefix, suffix } = wrap(file, () => buildPostProcessor(json.post_processor));

    const config = this.config;
    const lookup = (value: unknown): number | undefined => {
      const content = tokenContent(value);
      return content === undefined ? undefined : this.pieceToId.get(content);
    };
    const bos = lookup(config.bos_token) ?? options.bosTokenId;
    const configEos = lookup(config.eos_token);
    this.bosTokenId = bos;
    this.eosTokenIds = options.eosTokenIds && options.eosTokenIds.length > 0 ? [...options.eosTokenIds] : configEos !== undefined ? [configEos] : [];
    this.unkTokenId = lookup(config.unk_token) ?? (unkToken === undefined ? undefined : vocab.get(unkToken));
    this.padTokenId = lookup(config.pad_token);
    const specialTokens: { bos?: string; eos?: string; unk?: string; pad?: string } = {};
    const named = (value: unknown, id: number | undefined): string | undefined => tokenContent(value) ?? (id === undefined ? undefined : idToPiece[id]);
    const bosName = named(config.bos_token, bos);
    const eosName = named(config.eos_token, this.eosTokenIds[0]);
    const unkName = named(config.unk_token, this.unkTokenId);
    const padName = named(config.pad_token, this.padTokenId);
    if (bosName !== undefined) specialTokens.bos = bosName;
    if (eosName !== undefined) specialTokens.eos = eosName;
    if (unkName !== undefined) specialTokens.unk = unkName;
    if (padName !== undefined) specialTokens.pad = padName;
    this.specialTokens = specialTokens;
    for (const id of [...prefix, ...suffix]) {
      if (id >= this.vocabSize) throw bad('post_processor', `adds token id ${id} outside the vocabulary of ${this.vocabSize}`);
    }
    // tokenizer_config.json's add_bos_token / add_eos_token override the post-processor, as transformers'
    // Llama tokenizers do when they rebuild it.
    if (bos !== undefined && typeof config.add_bos_token === 'boolean') {
      prefix = config.add_bos_token ? (prefix[0] === bos ? prefix : [bos, ...prefix]) : prefix.filter((id) => id !== bos);
    }
    const eos = configEos ?? this.eosTokenIds[0];
    if (eos !== undefined && typeof config.add_eos_token === 'boolean') {
      suffix = config.add_eos_token ? (suffix[suffix.length - 1] === eos ? suffix : [...suffix, eos]) : suffix.filter((id) => id !== eos);
    }
    this.prefix = prefix;
    this.suffix = suffix;
    this.addsBos = bos !== undefined && prefix[0] === bos;
    this.addsEos = eos !== undefined && suffix[suffix.length - 1] === eos;
  }

  /**
   * Build a tokenizer from a parsed `tokenizer.json` (and optionally `tokenizer_config.json`).
   * @throws EngineError `MALFORMED` / `UNSUPPORTED_TOKENIZER` naming the JSON path.
   */
  static fromJson(json: unknown, options: TokenizerOptions = {}): Tokenizer {
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      const file = options.file ?? 'tokenizer.json';
      throw new EngineError('MALFORMED', `${file}: must be a JSON object`, { file });
    }
    return new Tokenizer(json as TokenizerJson, options);
  }

  /** The token string of an id (model piece or added token), or `undefined` when out of range. */
  idToToken(id: number): string | undefined {
    return this.idToPiece[id];
  }

  /** The id of a token string (model piece or added token). */
  tokenToId(token: string): number | undefined {
    return this.pieceToId.get(token);
  }

  /**
   * Token ids of `text`. Added tokens (`<|im_start|>`, `<s>`, ...) written in the text are recognised as such.
   * With `addSpecialTokens` (default true) the post-processor's tokens are added (BOS for Llama-family models).
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if (options.addSpecialTokens ?? true) ids.push(...this.prefix);
    for (const part of this.splitAdded(text)) {
      if (typeof part === 'number') {
        ids.push(part);
        continue;
      }
      const normalized = this.normalizer(part.text);
      for (const word of this.preTokenizer([normalized], part.start === 0)) {
        for (const id of this.model.tokenize(word)) ids.push(id);
      }
    }
    if (options.addSpecialTokens ?? true) ids.push(...this.suffix);
    return ids;
  }

  /** Split text into added-token ids and plain segments (with their offsets in `text`). */
  private splitAdded(text: string): Array<number | { text: string; start: number }> {
    const re = this.addedRegex;
    if (!re || text.length === 0) return text.length === 0 ? [] : [{ text, start: 0 }];
    const parts: Array<number | { text: string; start: number }> = [];
    let last = 0;
    re.lastIndex = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const token = this.addedByContent.get(m[0])!;
      let start = m.index;
      let end = start + m[0].length;
      if (token.singleWord) {
        const before = start > 0 ? text[start - 1]! : '';
        const after = end < text.length ? text[end]! : '';
        if ((before && WORD_CHAR.test(before)) || (after && WORD_CHAR.test(after))) {
          re.lastIndex = start + 1;
          continue;
        }
      }
      if (token.lstrip) while (start > last && WHITESPACE.test(text[start - 1]!)) start--;
      if (token.rstrip) while (end < text.length && WHITESPACE.test(text[end]!)) end++;
      if (start > last) parts.push({ text: text.slice(last, start), start: last });
      parts.push(token.id);
      last = end;
      re.lastIndex = end;
    }
    if (last < text.length) parts.push({ text: text.slice(last), start: last });
    return parts;
  }

  /**
   * Text of token ids.
   * @throws EngineError `INVALID_ARGUMENT` for an id outside `[0, vocabSize)`.
   */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const skip = options.skipSpecialTokens ?? false;
    const tokens: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const piece = Number.isInteger(id) ? this.idToPiece[id] : undefined;
      if (piece === undefined) {
        throw new EngineError('INVALID_ARGUMENT', `token id ${id} is outside the vocabulary [0, ${this.vocabSize})`, { field: 'ids' });
      }
      if (skip && this.specialTokenIds.has(id)) continue;
      tokens.push(piece);
    }
    return this.decoder(tokens).join('');
  }

  /**
   * The raw bytes of one token, as OpenAI's logprobs `bytes`: for a model piece the bytes it stands for whatever its
   * neighbours (byte-level BPE: GPT-2's byte-to-unicode map inverted; SentencePiece: a `<0xNN>` byte token is that
   * byte, another piece its UTF-8 with `▁` as a space); for an added token the UTF-8 of its content. A token holding
   * part of a multi-byte character gives those bytes (where `decode([id])` shows U+FFFD).
   * @throws EngineError `INVALID_ARGUMENT` for an id outside `[0, vocabSize)`.
   */
  tokenBytes(id: number): Uint8Array {
    const piece = Number.isInteger(id) ? this.idToPiece[id] : undefined;
    if (piece === undefined) {
      throw new EngineError('INVALID_ARGUMENT', `token id ${id} is outside the vocabulary [0, ${this.vocabSize})`, { field: 'id' });
    }
    return this.addedIds.has(id) ? new TextEncoder().encode(piece) : this.pieceBytes(piece);
  }

  /**
   * An incremental detokenizer: push ids one at a time and get back only complete new text (never half of a
   * multi-byte UTF-8 character), whose concatenation equals `decode(allIds)`.
   */
  decodeStream(options: DecodeOptions = {}): DecodeStream {
    const skip = options.skipSpecialTokens === true;
    const single = (skip ? this.singleSkip : this.singleKeep) ?? new Map<number, string>();
    if (skip) this.singleSkip = single;
    else this.singleKeep = single;
    return new DecodeStream((ids) => this.decode(ids, options), single, this.appendedText.bind(this));
  }

  /** One-id decodes shared by this tokenizer's decode streams (with and without special tokens). */
  private singleKeep: Map<number, string> | undefined;
  private singleSkip: Map<number, string> | undefined;

  /**
   * The text token `id` adds after token `prev`, `decode([prev, id])` minus `decode([prev])`, where the decoder makes
   * it depend on `id` alone (see `buildAppendRule`: byte-level BPE, SentencePiece-style and Metaspace decoders) and it
   * is final: not empty, and not ending in U+FFFD (what {@link DecodeStream} would hold back). Undefined otherwise,
   * and for added tokens and ids outside the vocabulary (decode the pair instead). The same with or without
   * `skipSpecialTokens` (special tokens are added tokens). An array lookup per id once computed (lazily, per id).
   */
  appendedText(prev: number, id: number): string | undefined {
    if (this.appendRule === undefined || !this.inVocabulary(prev) || !this.inVocabulary(id)) return undefined;
    const tails = (this.tails ??= { index: new Int32Array(this.vocabSize), texts: [''], leads: new Uint8Array(this.vocabSize) });
    if (tails.leads[prev] === 0) this.describePiece(prev, tails);
    if (tails.leads[id] === 0) this.describePiece(id, tails);
    const at = tails.index[id]!;
    return at > 0 && tails.leads[prev] === 1 ? tails.texts[at] : undefined;
  }

  /**
   * Per id, for {@link appendedText}: where its tail is in `texts` (-1: none), and whether it leads (1: yes, 2: no;
   * 0: the id is not described yet). Created at the first call, filled as ids come.
   */
  private tails: { index: Int32Array; texts: string[]; leads: Uint8Array } | undefined;

  private inVocabulary(id: number): boolean {
    return Number.isInteger(id) && id >= 0 && id < this.vocabSize;
  }

  /** Fills in `id`'s tail and whether it leads (an added token has no tail and does not lead). */
  private describePiece(id: number, tails: { index: Int32Array; texts: string[]; leads: Uint8Array }): void {
    const piece = this.idToPiece[id];
    const d = piece === undefined || this.addedIds.has(id) ? undefined : this.appendRule!(piece);
    const tail = d?.tail;
    tails.index[id] = tail === undefined || tail === '' || tail.endsWith('\uFFFD') ? -1 : tails.texts.push(tail) - 1;
    tails.leads[id] = d?.leads === true ? 1 : 2;
  }

}

function wrap<T>(file: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    if (e instanceof EngineError) throw new EngineError(e.code, `${file}: ${e.message}`, { file, field: e.field, cause: e });
    throw e;
  }
}
