/**
 * Structured outputs (vLLM `structured_outputs`): token-level constrained decoding with xgrammar, the grammar engine
 * vLLM uses by default, in its WebAssembly build. A spec (JSON schema, `json_object`, regex, choice or EBNF grammar)
 * is compiled once per tokenizer (cached); each sequence gets a matcher whose next-token bitmask masks the logits
 * before sampling and which then accepts the sampled token.
 * @module
 */
import { EngineError } from '../errors.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { TokenConstraint } from '../runtime/constraint.js';
import { xgrammar, type XgCompiledGrammar, type XgGrammarCompiler, type XgGrammarMatcher } from './xgrammar.js';

/**
 * What the output must match (vLLM `StructuredOutputsParams`; exactly one field). `json`: a JSON schema (object or
 * string); `jsonObject`: any JSON object (OpenAI `response_format: json_object`); `regex`: a regular expression the
 * whole output matches; `choice`: one of these strings exactly; `grammar`: an EBNF grammar (xgrammar / GBNF syntax,
 * root rule `root`).
 */
export interface StructuredOutputsParams {
  readonly json?: unknown;
  readonly jsonObject?: boolean;
  readonly regex?: string;
  readonly choice?: readonly string[];
  readonly grammar?: string;
}

/**
 * Validates a spec: an object with exactly one of the fields, each well-typed.
 * @throws EngineError `INVALID_ARGUMENT` naming the field.
 */
export function checkStructuredOutputs(spec: unknown): StructuredOutputsParams {
  const bad = (why: string): never => {
    throw new EngineError('INVALID_ARGUMENT', `structuredOutputs ${why}`, { field: 'structuredOutputs' });
  };
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) bad(`must be an object, got ${JSON.stringify(spec)}`);
  const s = spec as Record<string, unknown>;
  const given = ['json', 'jsonObject', 'regex', 'choice', 'grammar'].filter((k) => s[k] !== undefined && s[k] !== false);
  if (given.length !== 1) bad(`needs exactly one of json, jsonObject, regex, choice, grammar; got ${given.length === 0 ? 'none' : given.join(', ')}`);
  if (s.json !== undefined && !(typeof s.json === 'string' || (typeof s.json === 'object' && s.json !== null) || typeof s.json === 'boolean')) bad('json must be a JSON schema object or string');
  if (s.regex !== undefined && (typeof s.regex !== 'string' || s.regex.length === 0)) bad('regex must be a non-empty string');
  if (s.grammar !== undefined && (typeof s.grammar !== 'string' || s.grammar.trim().length === 0)) bad('grammar must be a non-empty EBNF string');
  if (s.choice !== undefined && (!Array.isArray(s.choice) || s.choice.length === 0 || s.choice.some((c) => typeof c !== 'string'))) bad('choice must be a non-empty array of strings');
  return s as StructuredOutputsParams;
}

/** How xgrammar must read a tokenizer's vocabulary (`vocab_type` and `prepend_space_in_tokenization`). */
export function vocabTypeOf(json: Readonly<Record<string, unknown>>): { vocabType: 'byte_level' | 'byte_fallback' | 'raw'; prependSpace: boolean } {
  const parts = (node: unknown): Record<string, unknown>[] => {
    if (node === null || typeof node !== 'object') return [];
    const n = node as Record<string, unknown>;
    const inner = (n.decoders ?? n.pretokenizers ?? n.normalizers) as unknown[] | undefined;
    return Array.isArray(inner) ? inner.flatMap(parts) : [n];
  };
  const decoders = parts(json.decoder);
  if (decoders.some((d) => d.type === 'ByteLevel')) return { vocabType: 'byte_level', prependSpace: false };
  const byteFallback = decoders.some((d) => d.type === 'ByteFallback');
  const prepend =
    parts(json.normalizer).some((n) => n.type === 'Prepend' && n.prepend === '\u2581') ||
    parts(json.pre_tokenizer).some((p) => p.type === 'Metaspace' && p.prepend_scheme !== 'never' && p.add_prefix_space !== false);
  return { vocabType: byteFallback ? 'byte_fallback' : 'raw', prependSpace: prepend };
}

/** A JSON-string literal for an EBNF grammar. */
function ebnfString(s: string): string {
  return JSON.stringify(s);
}

/**
 * The grammar compiler of one model: its tokenizer's vocabulary handed to xgrammar once, compiled specs cached by
 * their JSON text.
 */
export class StructuredOutputCompiler {
  private readonly cache = new Map<string, Promise<XgCompiledGrammar>>();
  private controlTokenIds: Int32Array | undefined;

  private constructor(
    private readonly compiler: XgGrammarCompiler,
    /** Logits width (the model's vocab size, which may exceed the tokenizer's). */
    readonly vocabSize: number,
    private readonly tokenizer: Tokenizer,
  ) {}

  /**
   * Ids of the tokens whose text contains a control character (U+0000-U+001F). JSON forbids them unescaped inside
   * strings, and kvq's JSON has no free whitespace, so no JSON output may contain them; xgrammar's JSON grammar
   * accepts some inside strings (measured: a tab), so JSON specs mask these tokens as well. Computed once.
   */
  private controlTokens(): Int32Array {
    if (!this.controlTokenIds) {
      const ids: number[] = [];
      for (let i = 0; i < this.tokenizer.vocabSize; i++) {
        if (this.tokenizer.specialTokenIds.has(i)) continue; // EOS etc. end the output, they are not text
        if (/[\u0000-\u001f]/.test(this.tokenizer.decode([i], { skipSpecialTokens: false }))) ids.push(i);
      }
      this.controlTokenIds = Int32Array.from(ids);
    }
    return this.controlTokenIds;
  }

  /**
   * Prepares xgrammar for a tokenizer.
   * @param vocabSize the model's logits width (`config.vocab_size`), at least the tokenizer's.
   * @param stopTokenIds the ids that end a sequence (the model's EOS ids).
   */
  static async create(tokenizer: Tokenizer, vocabSize: number, stopTokenIds: readonly number[]): Promise<StructuredOutputCompiler> {
    const xg = xgrammar();
    const { vocabType, prependSpace } = vocabTypeOf(tokenizer.json);
    const vocab = Array.from({ length: tokenizer.vocabSize }, (_, i) => tokenizer.idToToken(i) ?? '');
    const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, vocabType, prependSpace, Math.max(vocabSize, vocab.length), [...stopTokenIds]);
    return new StructuredOutputCompiler(await xg.GrammarCompiler.createGrammarCompiler(info, true), vocabSize, tokenizer);
  }

  /**
   * The compiled grammar of a spec (cached).
   * @throws EngineError `STRUCTURED_OUTPUT` for an invalid schema, regex or grammar (xgrammar's message).
   */
  compile(spec: StructuredOutputsParams): Promise<XgCompiledGrammar> {
    const s = checkStructuredOutputs(spec);
    const key = JSON.stringify(s);
    let hit = this.cache.get(key);
    if (!hit) {
      hit = this.compileUncached(s).catch((cause: unknown) => {
        this.cache.delete(key);
        throw new EngineError('STRUCTURED_OUTPUT', `cannot compile ${Object.keys(s)[0]} for structured outputs: ${(cause as Error)?.message ?? String(cause)}`, { field: 'structuredOutputs', cause });
      });
      this.cache.set(key, hit);
    }
    return hit;
  }

  private compileUncached(s: StructuredOutputsParams): Promise<XgCompiledGrammar> {
    const c = this.compiler;
    // JSON on one line with fixed separators (", " and ": "), strict (no properties the schema does not name). No
    // free whitespace between elements: vLLM's `disable_any_whitespace` behaviour, chosen as the default because
    // small models otherwise fill max_tokens with whitespace inside a valid prefix (measured on kvq-tiny).
    if (s.json !== undefined) return c.compileJSONSchema(typeof s.json === 'string' ? s.json : JSON.stringify(s.json), false, -1, undefined, true);
    if (s.jsonObject) return c.compileJSONSchema(JSON.stringify({ type: 'object' }), false, -1, undefined, false);
    if (s.regex !== undefined) return c.compileStructuralTag({ type: 'structural_tag', format: { type: 'regex', pattern: s.regex } });
    if (s.choice !== undefined) return c.compileGrammar(`root ::= ${s.choice.map(ebnfString).join(' | ')}`);
    return c.compileGrammar(s.grammar!);
  }

  /** One matcher per completion (`n`), each starting at the grammar's root. */
  async constraints(spec: StructuredOutputsParams, n: number): Promise<GrammarConstraint[]> {
    const grammar = await this.compile(spec);
    const xg = xgrammar();
    const banned = spec.json !== undefined || spec.jsonObject ? this.controlTokens() : undefined;
    return Promise.all(Array.from({ length: n }, async () => new GrammarConstraint(await xg.GrammarMatcher.createGrammarMatcher(grammar), this.vocabSize, banned)));
  }
}

/** A sequence's grammar state as a {@link TokenConstraint}. */
export class GrammarConstraint implements TokenConstraint {
  private mask: Int32Array | undefined;
  private pending: Promise<void> | undefined;
  private disposed = false;

  constructor(
    private readonly matcher: XgGrammarMatcher,
    private readonly vocabSize: number,
    /** Token ids masked in addition to the grammar's mask (see `controlTokens`). */
    private readonly banned?: Int32Array,
  ) {}

  get ready(): boolean {
    return this.mask !== undefined || this.matcher.isTerminated();
  }

  prepare(): Promise<void> {
    if (this.disposed || this.ready) return Promise.resolve();
    this.pending ??= this.matcher.getNextTokenBitmask().then((m) => {
      this.mask = m;
      this.pending = undefined;
    });
    return this.pending;
  }

  applyTo(logits: Float32Array): void {
    const m = this.mask;
    if (!m) throw new EngineError('STRUCTURED_OUTPUT', 'the grammar mask is not ready: await engine.prepare() before step()');
    const n = Math.min(logits.length, this.vocabSize);
    for (let i = 0; i < n; i++) if (((m[i >>> 5]! >>> (i & 31)) & 1) === 0) logits[i] = -Infinity;
    for (let i = n; i < logits.length; i++) logits[i] = -Infinity;
    if (this.banned) for (const id of this.banned) if (id < logits.length) logits[id] = -Infinity;
  }

  accept(tokenId: number): boolean {
    this.mask = undefined;
    return this.matcher.acceptToken(tokenId);
  }

  get terminated(): boolean {
    return this.matcher.isTerminated();
  }

  /** Frees the matcher (after a mask computation in flight, which still reads it, has finished). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const free = () => this.matcher.dispose();
    if (this.pending) void this.pending.then(free, free);
    else free();
  }
}
