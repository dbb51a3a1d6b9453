import { BenchPeerError } from '../errors.js';
import { GgufType, type GgmlTensorType, type GgufEntry } from '@kvq/engine';

/** A Llama architecture shape (GGUF `llama`): every size the tensors and metadata need. */
export interface LlamaShape {
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  /** Per-head size; `hiddenSize / numHeads` for every shape here. */
  readonly headDim: number;
  readonly intermediateSize: number;
  readonly vocabSize: number;
  /** GGUF `llama.context_length` (the longest context either engine is asked to run). */
  readonly contextLength: number;
  /** Default 1e-5. */
  readonly rmsNormEps?: number;
  /** Default 10000. */
  readonly ropeTheta?: number;
}

/** Check a shape's sizes (positive integers, heads dividing evenly, even head dim). */
export function checkLlamaShape(shape: LlamaShape, where: string): void {
  for (const k of ['hiddenSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'intermediateSize', 'vocabSize', 'contextLength'] as const) {
    const v = shape[k];
    if (!Number.isSafeInteger(v) || v < 1) throw new BenchPeerError('INVALID_ARGUMENT', `${where}: ${k} must be a positive integer, got ${v}`, { field: k });
  }
  if (shape.numHeads % shape.numKvHeads !== 0) {
    throw new BenchPeerError('INVALID_ARGUMENT', `${where}: numHeads ${shape.numHeads} is not a multiple of numKvHeads ${shape.numKvHeads}`, { field: 'numKvHeads' });
  }
  if (shape.headDim % 2 !== 0) throw new BenchPeerError('INVALID_ARGUMENT', `${where}: headDim ${shape.headDim} must be even (RoPE pairs)`, { field: 'headDim' });
}

/** GGUF `llama.*` hyper-parameter metadata (llama.cpp key names) of a shape. */
/**
 * @param fileType a dense tensor type (F32, F16, BF16), or a llama.cpp `llama_ftype` number (quantized files, e.g.
 *   15 for Q4_K_M; `general.quantization_version` 2 is then written too)
 */
export function llamaModelMetadata(shape: LlamaShape, name: string, fileType: GgmlTensorType | number): GgufEntry[] {
  const u32 = (key: string, value: number): GgufEntry => ({ key, type: GgufType.UINT32, value });
  const f32 = (key: string, value: number): GgufEntry => ({ key, type: GgufType.FLOAT32, value });
  // general.file_type: llama_ftype (0 ALL_F32, 1 MOSTLY_F16, 32 MOSTLY_BF16, or the quantized file's own).
  const ftype = typeof fileType === 'number' ? fileType : fileType === 'F32' ? 0 : fileType === 'F16' ? 1 : 32;
  return [
    { key: 'general.architecture', type: GgufType.STRING, value: 'llama' },
    { key: 'general.name', type: GgufType.STRING, value: name },
    u32('general.file_type', ftype),
    ...(typeof fileType === 'number' ? [u32('general.quantization_version', 2)] : []),
    u32('llama.context_length', shape.contextLength),
    u32('llama.embedding_length', shape.hiddenSize),
    u32('llama.block_count', shape.numLayers),
    u32('llama.feed_forward_length', shape.intermediateSize),
    u32('llama.attention.head_count', shape.numHeads),
    u32('llama.attention.head_count_kv', shape.numKvHeads),
    u32('llama.attention.key_length', shape.headDim),
    u32('llama.attention.value_length', shape.headDim),
    u32('llama.rope.dimension_count', shape.headDim),
    u32('llama.vocab_size', shape.vocabSize),
    f32('llama.attention.layer_norm_rms_epsilon', shape.rmsNormEps ?? 1e-5),
    f32('llama.rope.freq_base', shape.ropeTheta ?? 10000),
  ];
}

/** One tensor of a Llama GGUF, before its data: GGUF name, ggml dims (innermost first) and which weight it is. */
export interface LlamaTensorSlot {
  readonly name: string;
  readonly dims: readonly number[];
  /** Fan-in of a matrix (its `dims[0]`), or 0 for a norm vector. */
  readonly fanIn: number;
  /** `norm`, `embed` or `matrix`. */
  readonly kind: 'norm' | 'embed' | 'matrix';
}

/** Every tensor of a Llama GGUF in llama.cpp's order (untied output). */
export function llamaTensorSlots(shape: LlamaShape): LlamaTensorSlot[] {
  const h = shape.hiddenSize;
  const q = shape.numHeads * shape.headDim;
  const kv = shape.numKvHeads * shape.headDim;
  const f = shape.intermediateSize;
  const m = (name: string, inF: number, outF: number): LlamaTensorSlot => ({ name, dims: [inF, outF], fanIn: inF, kind: 'matrix' });
  const n = (name: string): LlamaTensorSlot => ({ name, dims: [h], fanIn: 0, kind: 'norm' });
  const out: LlamaTensorSlot[] = [{ name: 'token_embd.weight', dims: [h, shape.vocabSize], fanIn: h, kind: 'embed' }];
  for (let l = 0; l < shape.numLayers; l++) {
    const p = `blk.${l}.`;
    out.push(
      n(`${p}attn_norm.weight`),
      m(`${p}attn_q.weight`, h, q),
      m(`${p}attn_k.weight`, h, kv),
      m(`${p}attn_v.weight`, h, kv),
      m(`${p}attn_output.weight`, q, h),
      n(`${p}ffn_norm.weight`),
      m(`${p}ffn_gate.weight`, h, f),
      m(`${p}ffn_up.weight`, h, f),
      m(`${p}ffn_down.weight`, f, h),
    );
  }
  out.push(n('output_norm.weight'), m('output.weight', h, shape.vocabSize));
  return out;
}

/** Token types of GGUF / SentencePiece vocabularies (`tokenizer.ggml.token_type`). */
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, BYTE: 6 } as const;

/** Ids of the synthetic vocabulary's special tokens; normal pieces start after the 256 byte tokens. */
export const SYNTHETIC_VOCAB = { unk: 0, bos: 1, eos: 2, firstByte: 3, firstNormal: 259 } as const;

const ALPHABET = 'etaoinshrdlucmfwypvbgkjqxz';

/**
 * A synthetic SentencePiece-style vocabulary of `size` tokens (Llama 2 layout): `<unk>`, `<s>`, `</s>`, the 256
 * byte-fallback tokens `<0x00>`..`<0xFF>`, `▁`, then unique lowercase pieces (half with the `▁` word marker) with
 * decreasing scores. Short pieces come first, so every longer piece is reachable by merges of shorter ones.
 * Deterministic; no real text statistics (the random-weight models never see text).
 * @throws BenchPeerError `INVALID_ARGUMENT` when `size` < 260.
 */
export function syntheticVocab(size: number): { tokens: string[]; scores: number[]; types: number[] } {
  if (!Number.isSafeInteger(size) || size < SYNTHETIC_VOCAB.firstNormal + 1) {
    throw new BenchPeerError('INVALID_ARGUMENT', `vocabSize must be an integer >= ${SYNTHETIC_VOCAB.firstNormal + 1}, got ${size}`, { field: 'vocabSize' });
  }
  const tokens = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TOKEN_TYPE.UNKNOWN, TOKEN_TYPE.CONTROL, TOKEN_TYPE.CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_TYPE.BYTE);
  }
  // The word marker alone, then words in shortlex order over the alphabet (e, t, ..., ee, et, ...), each as
  // "word" and "▁word": every piece is a merge of two shorter ones, as in a trained SentencePiece BPE vocabulary.
  tokens.push('\u2581');
  types.push(TOKEN_TYPE.NORMAL);
  let length = 1;
  let index = 0;
  let count = ALPHABET.length;
  while (tokens.length < size) {
    let word = '';
    for (let i = 0, x = index; i < length; i++, x = Math.floor(x / ALPHABET.length)) word = ALPHABET[x % ALPHABET.length]! + word;
    tokens.push(word);
    types.push(TOKEN_TYPE.NORMAL);
    if (tokens.length < size) {
      tokens.push(`\u2581${word}`);
      types.push(TOKEN_TYPE.NORMAL);
    }
    if (++index === count) {
      index = 0;
      length++;
      count *= ALPHABET.length;
    }
  }
  const scores = tokens.map((_, i) => (types[i] === TOKEN_TYPE.NORMAL ? -(i - SYNTHETIC_VOCAB.firstNormal) : 0));
  return { tokens, scores, types };
}

/** GGUF `tokenizer.ggml.*` metadata of the {@link syntheticVocab} (SentencePiece `llama` model, BOS added). */
export function syntheticTokenizerMetadata(size: number): GgufEntry[] {
  const v = syntheticVocab(size);
  return [
    { key: 'tokenizer.ggml.model', type: GgufType.STRING, value: 'llama' },
    { key: 'tokenizer.ggml.tokens', type: GgufType.ARRAY, itemType: GgufType.STRING, value: v.tokens },
    { key: 'tokenizer.ggml.scores', type: GgufType.ARRAY, itemType: GgufType.FLOAT32, value: v.scores },
    { key: 'tokenizer.ggml.token_type', type: GgufType.ARRAY, itemType: GgufType.INT32, value: v.types },
    { key: 'tokenizer.ggml.unknown_token_id', type: GgufType.UINT32, value: SYNTHETIC_VOCAB.unk },
    { key: 'tokenizer.ggml.bos_token_id', type: GgufType.UINT32, value: SYNTHETIC_VOCAB.bos },
    { key: 'tokenizer.ggml.eos_token_id', type: GgufType.UINT32, value: SYNTHETIC_VOCAB.eos },
    { key: 'tokenizer.ggml.add_bos_token', type: GgufType.BOOL, value: true },
    { key: 'tokenizer.ggml.add_eos_token', type: GgufType.BOOL, value: false },
  ];
}
