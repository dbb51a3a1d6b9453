import { EngineError } from '../errors.js';
import type { Llama2cTokenizerFile } from '../formats/llama2c.js';
import type { TokenizerConfigJson, TokenizerJson } from './tokenizer.js';

/** SentencePiece's word-boundary marker. */
const SPIECE_UNDERLINE = '▁';

/** Longest piece (UTF-16 code units) for which merges are derived from the scores. */
const MAX_MERGEABLE_PIECE_LENGTH = 256;

/** GGUF / SentencePiece token types (`tokenizer.ggml.token_type`). */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/** A SentencePiece BPE vocabulary: pieces (with `▁` for spaces), merge scores and token types. */
export interface SentencePieceVocab {
  readonly pieces: readonly string[];
  /** Merge score per piece: of two candidate merges, the one producing the higher-scored piece wins. */
  readonly scores: ArrayLike<number>;
  /** {@link TokenType} per piece. */
  readonly types: ArrayLike<number>;
  readonly bosId?: number | undefined;
  readonly eosId?: number | undefined;
  /** Prepend BOS when encoding with special tokens. */
  readonly addBos: boolean;
  /** Append EOS when encoding with special tokens. */
  readonly addEos: boolean;
  /** Prepend `▁` to the text (SentencePiece `add_dummy_prefix`). Default true. */
  readonly addSpacePrefix?: boolean;
  /** For error messages. */
  readonly file: string;
}

/**
 * Express a SentencePiece BPE vocabulary as a Hugging Face `tokenizer.json` (the form transformers gives Llama 2):
 * normalizer Prepend(`▁`) + Replace(`' '`→`▁`), BPE with byte fallback and `fuse_unk`, and the merges implied by
 * the scores — every split `(left, right)` of a normal piece whose halves are pieces, ordered by the merged
 * piece's score (highest first). Applying those merges lowest-rank-first is SentencePiece's / llama2.c's
 * "merge the adjacent pair whose concatenation has the best score" algorithm.
 * @throws EngineError `MALFORMED` for duplicate normal pieces or mismatched array lengths.
 */
export function sentencePieceTokenizerJson(v: SentencePieceVocab): { tokenizer: TokenizerJson; config: TokenizerConfigJson } {
  const n = v.pieces.length;
  if (v.scores.length !== n || v.types.length !== n) {
    throw new EngineError('MALFORMED', `${v.file}: ${n} pieces but ${v.scores.length} scores and ${v.types.length} token types`, {
      file: v.file,
    });
  }
  const vocab: Record<string, number> = {};
  const normal = new Map<string, number>();
  const added: Array<Record<string, unknown>> = [];
  let unkId: number | undefined;
  let hasBytes = true;
  for (let id = 0; id < n; id++) {
    const piece = v.pieces[id]!;
    const type = v.types[id]!;
    if (Object.prototype.hasOwnProperty.call(vocab, piece)) {
      throw new EngineError('MALFORMED', `${v.file}: piece ${JSON.stringify(piece)} appears twice (ids ${vocab[piece]} and ${id})`, {
        file: v.file,
      });
    }
    vocab[piece] = id;
    if (type === TokenType.NORMAL) normal.set(piece, id);
    if (type === TokenType.UNKNOWN && unkId === undefined) unkId = id;
    if (type === TokenType.CONTROL || type === TokenType.UNKNOWN || type === TokenType.USER_DEFINED) {
      added.push({
        id,
        content: piece,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: type !== TokenType.USER_DEFINED,
      });
    }
  }
  for (let b = 0; b < 256 && hasBytes; b++) {
    hasBytes = Object.prototype.hasOwnProperty.call(vocab, `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  }
  const merges: Array<{ left: string; right: string; score: number; id: number; leftId: number }> = [];
  for (const [piece, id] of normal) {
    // Real pieces are short (SentencePiece's max_sentencepiece_length defaults to 16); bounding the length keeps a
    // corrupt vocabulary from making this quadratic loop run for minutes.
    if (piece.length > MAX_MERGEABLE_PIECE_LENGTH) continue;
    const chars = [...piece];
    let prefix = '';
    for (let k = 1; k < chars.length; k++) {
      prefix += chars[k - 1]!;
      const rest = piece.slice(prefix.length);
      const leftId = normal.get(prefix);
      if (leftId !== undefined && normal.has(rest)) merges.push({ left: prefix, right: rest, score: v.scores[id]!, id, leftId });
    }
  }
  merges.sort((a, b) => b.score - a.score || a.id - b.id || a.leftId - b.leftId);

  const addSpacePrefix = v.addSpacePrefix ?? true;
  const bosPiece = v.bosId === undefined ? undefined : v.pieces[v.bosId];
  const eosPiece = v.eosId === undefined ? undefined : v.pieces[v.eosId];
  const postProcessor = templateProcessing(
    v.addBos && bosPiece !== undefined ? { piece: bosPiece, id: v.bosId! } : undefined,
    v.addEos && eosPiece !== undefined ? { piece: eosPiece, id: v.eosId! } : undefined,
  );
  const replaceSpace = { type: 'Replace', pattern: { String: ' ' }, content: SPIECE_UNDERLINE };
  const tokenizer: TokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: addSpacePrefix
      ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: SPIECE_UNDERLINE }, replaceSpace] }
      : replaceSpace,
    pre_tokenizer: null,
    post_processor: postProcessor,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPIECE_UNDERLINE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(addSpacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unkId === undefined ? null : v.pieces[unkId],
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: hasBytes,
      ignore_merges: false,
      vocab,
      merges: merges.map((m) => [m.left, m.right]),
    },
  };
  const config: TokenizerConfigJson = {
    tokenizer_class: 'LlamaTokenizerFast',
    add_bos_token: v.addBos,
    add_eos_token: v.addEos,
    bos_token: bosPiece ?? null,
    eos_token: eosPiece ?? null,
    unk_token: unkId === undefined ? null : v.pieces[unkId],
    pad_token: null,
    clean_up_tokenization_spaces: false,
    legacy: true,
  };
  return { tokenizer, config };
}

/**
 * A `TemplateProcessing` post-processor adding `bos` before and `eos` after each sequence (either may be absent).
 */
export function templateProcessing(
  bos: { piece: string; id: number } | undefined,
  eos: { piece: string; id: number } | undefined,
): Record<string, unknown> {
  const sequence = (typeId: number): unknown[] => [
    ...(bos ? [{ SpecialToken: { id: bos.piece, type_id: typeId } }] : []),
    { Sequence: { id: typeId === 0 ? 'A' : 'B', type_id: typeId } },
    ...(eos ? [{ SpecialToken: { id: eos.piece, type_id: typeId } }] : []),
  ];
  const specialTokens: Record<string, unknown> = {};
  for (const t of [bos, eos]) if (t) specialTokens[t.piece] = { id: t.piece, ids: [t.id], tokens: [t.piece] };
  return { type: 'TemplateProcessing', single: sequence(0), pair: [...sequence(0), ...sequence(1)], special_tokens: specialTokens };
}

/**
 * The SentencePiece vocabulary of a llama2.c `tokenizer.bin`. llama2.c fixes the ids: 0 `<unk>`, 1 BOS
 * (`"\n<s>\n"`, renamed `<s>`), 2 EOS (`"\n</s>\n"`, renamed `</s>`); pieces of the form `<0xXX>` are byte tokens;
 * spaces in pieces become `▁`. BOS is added when encoding, EOS is not (llama2.c's `encode(text, bos=1, eos=0)`).
 */
export function llama2cSentencePieceVocab(tok: Llama2cTokenizerFile, file: string): SentencePieceVocab {
  const n = tok.pieces.length;
  const pieces: string[] = [];
  const types = new Uint8Array(n);
  for (let id = 0; id < n; id++) {
    const raw = tok.pieces[id]!;
    if (id === 0 && raw === '<unk>') {
      pieces.push(raw);
      types[id] = TokenType.UNKNOWN;
    } else if ((id === 1 || id === 2) && raw.trim().startsWith('<') && raw.trim().endsWith('>')) {
      pieces.push(raw.trim());
      types[id] = TokenType.CONTROL;
    } else if (/^<0x[0-9A-F]{2}>$/.test(raw)) {
      pieces.push(raw);
      types[id] = TokenType.BYTE;
    } else {
      pieces.push(raw.replaceAll(' ', SPIECE_UNDERLINE));
      types[id] = TokenType.NORMAL;
    }
  }
  return {
    pieces,
    scores: tok.scores,
    types,
    bosId: n > 1 ? 1 : undefined,
    eosId: n > 2 ? 2 : undefined,
    addBos: true,
    addEos: false,
    file,
  };
}
