import { EngineError } from '../errors.js';

/** Construction options of {@link BpeModel} (the `model` object of a `tokenizer.json` of type `BPE`). */
export interface BpeModelOptions {
  /** Piece → id. */
  vocab: ReadonlyMap<string, number>;
  /** Merge rules in priority order (index = rank; lower merges first). */
  merges: ReadonlyArray<readonly [string, string]>;
  /** Piece emitted for characters missing from the vocabulary (none: such characters are dropped, as in HF). */
  unkToken?: string | undefined;
  /** Fuse consecutive unknown characters into one unknown token. */
  fuseUnk?: boolean;
  /** Emit `<0xXX>` byte pieces for characters missing from the vocabulary (SentencePiece byte fallback). */
  byteFallback?: boolean;
  /** When a whole pre-token is itself a piece, emit it without merging (Llama 3). */
  ignoreMerges?: boolean;
}

const POS_SPAN = 2 ** 32;
const utf8 = new TextEncoder();
const CACHE_LIMIT = 20_000;
const CACHE_WORD_CHARS = 64;

/**
 * Byte-pair-encoding model with Hugging Face `tokenizers` semantics: the word is split into characters (with byte
 * fallback / unknown handling), then the adjacent pair with the lowest merge rank is merged repeatedly, leftmost
 * first among equal ranks. O(n log n) per word with a binary heap, so whole-text "words" of SentencePiece-style
 * tokenizers (no pre-tokenizer) stay fast.
 */
export class BpeModel {
  private readonly vocab: ReadonlyMap<string, number>;
  /** (leftId * idSpan + rightId) → rank * idSpan + mergedId. */
  private readonly mergeTable = new Map<number, number>();
  private readonly idSpan: number;
  private readonly unkId: number | undefined;
  private readonly fuseUnk: boolean;
  private readonly byteIds: Array<number | undefined> | undefined;
  private readonly ignoreMerges: boolean;
  private readonly cache = new Map<string, number[]>();

  constructor(options: BpeModelOptions) {
    this.vocab = options.vocab;
    let maxId = 0;
    for (const id of options.vocab.values()) maxId = Math.max(maxId, id);
    this.idSpan = maxId + 1;
    options.merges.forEach(([left, right], rank) => {
      const l = this.vocab.get(left);
      const r = this.vocab.get(right);
      const merged = this.vocab.get(left + right);
      if (l === undefined || r === undefined || merged === undefined) {
        const missing = l === undefined ? left : r === undefined ? right : left + right;
        throw new EngineError('MALFORMED', `tokenizer merge #${rank} (${JSON.stringify(left)} ${JSON.stringify(right)}): ${JSON.stringify(missing)} is not in the vocabulary`, {
          field: 'model.merges',
        });
      }
      const key = l * this.idSpan + r;
      if (!this.mergeTable.has(key)) this.mergeTable.set(key, rank * this.idSpan + merged);
    });
    this.unkId = options.unkToken === undefined ? undefined : this.vocab.get(options.unkToken);
    if (options.unkToken !== undefined && this.unkId === undefined) {
      throw new EngineError('MALFORMED', `tokenizer unk_token ${JSON.stringify(options.unkToken)} is not in the vocabulary`, {
        field: 'model.unk_token',
      });
    }
    this.fuseUnk = options.fuseUnk ?? false;
    this.ignoreMerges = options.ignoreMerges ?? false;
    if (options.byteFallback) {
      this.byteIds = [];
      for (let b = 0; b < 256; b++) this.byteIds.push(this.vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`));
    }
  }

  /** Token ids of one pre-tokenized word. */
  tokenize(word: string): number[] {
    if (word.length === 0) return [];
    const cached = this.cache.get(word);
    if (cached) return cached;
    const ids = this.tokenizeUncached(word);
    if (word.length <= CACHE_WORD_CHARS) {
      if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
      this.cache.set(word, ids);
    }
    return ids;
  }

  private initialSymbols(word: string): number[] {
    const ids: number[] = [];
    let lastWasUnk = false;
    for (const ch of word) {
      const id = this.vocab.get(ch);
      if (id !== undefined) {
        ids.push(id);
        lastWasUnk = false;
        continue;
      }
      if (this.byteIds) {
        const bytes = utf8.encode(ch);
        const byteTokens = Array.from(bytes, (b) => this.byteIds![b]);
        if (byteTokens.every((t) => t !== undefined)) {
          ids.push(...(byteTokens as number[]));
          lastWasUnk = false;
          continue;
        }
      }
      if (this.unkId !== undefined) {
        if (!(this.fuseUnk && lastWasUnk)) ids.push(this.unkId);
        lastWasUnk = true;
      }
    }
    return ids;
  }

  private tokenizeUncached(word: string): number[] {
    if (this.ignoreMerges) {
      const whole = this.vocab.get(word);
      if (whole !== undefined) return [whole];
    }
    const ids = this.initialSymbols(word);
    const n = ids.length;
    if (n < 2 || this.mergeTable.size === 0) return ids;
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap();
    const span = this.idSpan;
    const consider = (pos: number): void => {
      const r = next[pos]!;
      if (r < 0) return;
      const m = this.mergeTable.get(ids[pos]! * span + ids[r]!);
      if (m !== undefined) heap.push(Math.floor(m / span) * POS_SPAN + pos);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const key = heap.pop();
      const rank = Math.floor(key / POS_SPAN);
      const pos = key - rank * POS_SPAN;
      if (!alive[pos]) continue;
      const r = next[pos]!;
      if (r < 0) continue;
      const m = this.mergeTable.get(ids[pos]! * span + ids[r]!);
      if (m === undefined || Math.floor(m / span) !== rank) continue;
      ids[pos] = m - rank * span;
      alive[r] = 0;
      const rr = next[r]!;
      next[pos] = rr;
      if (rr >= 0) prev[rr] = pos;
      if (prev[pos]! >= 0) consider(prev[pos]!);
      consider(pos);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(ids[i]!);
    return out;
  }
}

/** Binary min-heap of non-negative safe integers. */
class MinHeap {
  private items: number[] = [];
  get size(): number {
    return this.items.length;
  }
  push(value: number): void {
    const a = this.items;
    let i = a.length;
    a.push(value);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]! <= value) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = value;
  }
  pop(): number {
    const a = this.items;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const r = l + 1;
        const c = r < a.length && a[r]! < a[l]! ? r : l;
        if (a[c]! >= last) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}
