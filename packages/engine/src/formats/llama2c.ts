import { EngineError } from '../errors.js';
import type { ByteSource } from '../io/source.js';

/** `ak42` magic of llama2.c's versioned checkpoints (export.py `version1_export`). */
export const LLAMA2C_MAGIC = 0x616b3432;
/** Size of the versioned (v1+) header. */
const LLAMA2C_V1_HEADER_BYTES = 256;
/** Size of the legacy (v0) header: 7 int32. */
const LLAMA2C_V0_HEADER_BYTES = 28;

/** The hyper-parameters of a llama2.c checkpoint. */
export interface Llama2cHeader {
  /** 0 for the legacy header-less layout, 1 for the `ak42` fp32 layout. */
  readonly version: 0 | 1;
  readonly dim: number;
  readonly hiddenDim: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly vocabSize: number;
  readonly seqLen: number;
  /** Whether the classifier reuses the token embedding table (no separate `wcls`). */
  readonly sharedClassifier: boolean;
  /** Offset of the first weight. */
  readonly headerBytes: number;
}

/** One tensor of a llama2.c checkpoint, with its float32 element offset from the first weight. */
export interface Llama2cTensorSlot {
  /** Hugging Face name (`model.layers.0.self_attn.q_proj.weight`, ...) or `freq_cis_real` / `freq_cis_imag`. */
  readonly name: string;
  /** `[out, in]` for matrices, `[n]` for norms. */
  readonly shape: readonly number[];
  /** Byte offset in the file. */
  readonly offset: number;
}

function positive(file: string, field: string, value: number): number {
  if (!Number.isInteger(value) || value <= 0 || value > 1 << 24) {
    throw new EngineError('MALFORMED', `${file}: llama2.c header field ${field} is ${value}; expected a positive integer`, {
      file,
      field,
    });
  }
  return value;
}

/**
 * Parse the header of a llama2.c checkpoint (legacy v0 or `ak42` v1).
 * @param prefix at least the first 256 bytes (or the whole file when shorter).
 * @throws EngineError `TRUNCATED` / `MALFORMED` / `UNSUPPORTED_FORMAT` (v2 int8 checkpoints).
 */
export function parseLlama2cHeader(prefix: Uint8Array, fileSize: number, file: string): Llama2cHeader {
  if (prefix.length < LLAMA2C_V0_HEADER_BYTES) {
    throw new EngineError('TRUNCATED', `${file}: ${fileSize} bytes is too short for a llama2.c checkpoint header`, { file });
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  let version: 0 | 1 = 0;
  let base = 0;
  let headerBytes = LLAMA2C_V0_HEADER_BYTES;
  if (view.getUint32(0, true) === LLAMA2C_MAGIC) {
    const v = view.getInt32(4, true);
    if (v !== 1) {
      throw new EngineError(
        'UNSUPPORTED_FORMAT',
        `${file}: llama2.c checkpoint version ${v} is not supported (only fp32 versions 0 and 1; version 2 is int8)`,
        { file, field: 'version' },
      );
    }
    if (prefix.length < LLAMA2C_V1_HEADER_BYTES) {
      throw new EngineError('TRUNCATED', `${file}: ${fileSize} bytes is too short for a llama2.c v1 header`, { file });
    }
    version = 1;
    base = 8;
    headerBytes = LLAMA2C_V1_HEADER_BYTES;
  }
  const int = (i: number): number => view.getInt32(base + 4 * i, true);
  const dim = positive(file, 'dim', int(0));
  const hiddenDim = positive(file, 'hidden_dim', int(1));
  const numLayers = positive(file, 'n_layers', int(2));
  const numHeads = positive(file, 'n_heads', int(3));
  const numKvHeads = positive(file, 'n_kv_heads', int(4));
  const rawVocab = int(5);
  const seqLen = positive(file, 'seq_len', int(6));
  let sharedClassifier: boolean;
  let vocabSize: number;
  if (version === 0) {
    sharedClassifier = rawVocab > 0;
    vocabSize = positive(file, 'vocab_size', Math.abs(rawVocab));
  } else {
    vocabSize = positive(file, 'vocab_size', rawVocab);
    const flag = view.getUint8(36);
    if (flag > 1) throw new EngineError('MALFORMED', `${file}: shared_classifier flag is ${flag}`, { file, field: 'shared_classifier' });
    sharedClassifier = flag === 1;
  }
  if (dim % numHeads !== 0 || (dim / numHeads) % 2 !== 0) {
    throw new EngineError('MALFORMED', `${file}: dim ${dim} is not n_heads ${numHeads} times an even head size`, { file, field: 'dim' });
  }
  if (numHeads % numKvHeads !== 0) {
    throw new EngineError('MALFORMED', `${file}: n_heads ${numHeads} is not a multiple of n_kv_heads ${numKvHeads}`, {
      file,
      field: 'n_kv_heads',
    });
  }
  return { version, dim, hiddenDim, numLayers, numHeads, numKvHeads, vocabSize, seqLen, sharedClassifier, headerBytes };
}

/**
 * Where every tensor of a llama2.c checkpoint lives, in file order, and the exact file size that layout implies.
 * Matrices are `[out, in]` row-major; Q and K rows are in the interleaved RoPE layout (as trained by llama2.c).
 */
export function llama2cLayout(h: Llama2cHeader): { slots: Llama2cTensorSlot[]; fileSize: number } {
  const fileSize = llama2cFileSize(h);
  if (!Number.isSafeInteger(fileSize)) throw new EngineError('MALFORMED', `llama2.c header implies an impossible file size ${fileSize}`);
  const headSize = h.dim / h.numHeads;
  const kvDim = h.numKvHeads * headSize;
  const slots: Llama2cTensorSlot[] = [];
  let offset = h.headerBytes;
  const add = (name: string, shape: number[]): void => {
    slots.push({ name, shape, offset });
    offset += 4 * shape.reduce((a, b) => a * b, 1);
  };
  const perLayer = (suffix: string, shape: number[]): void => {
    for (let l = 0; l < h.numLayers; l++) add(`model.layers.${l}.${suffix}`, shape);
  };
  const embed = (): void => add('model.embed_tokens.weight', [h.vocabSize, h.dim]);
  if (h.version === 0) {
    embed();
    perLayer('input_layernorm.weight', [h.dim]);
    perLayer('self_attn.q_proj.weight', [h.dim, h.dim]);
    perLayer('self_attn.k_proj.weight', [kvDim, h.dim]);
    perLayer('self_attn.v_proj.weight', [kvDim, h.dim]);
    perLayer('self_attn.o_proj.weight', [h.dim, h.dim]);
    perLayer('post_attention_layernorm.weight', [h.dim]);
    perLayer('mlp.gate_proj.weight', [h.hiddenDim, h.dim]);
    perLayer('mlp.down_proj.weight', [h.dim, h.hiddenDim]);
    perLayer('mlp.up_proj.weight', [h.hiddenDim, h.dim]);
    add('model.norm.weight', [h.dim]);
    add('freq_cis_real', [h.seqLen, headSize / 2]);
    add('freq_cis_imag', [h.seqLen, headSize / 2]);
  } else {
    perLayer('input_layernorm.weight', [h.dim]);
    perLayer('post_attention_layernorm.weight', [h.dim]);
    add('model.norm.weight', [h.dim]);
    embed();
    perLayer('self_attn.q_proj.weight', [h.dim, h.dim]);
    perLayer('self_attn.k_proj.weight', [kvDim, h.dim]);
    perLayer('self_attn.v_proj.weight', [kvDim, h.dim]);
    perLayer('self_attn.o_proj.weight', [h.dim, h.dim]);
    perLayer('mlp.gate_proj.weight', [h.hiddenDim, h.dim]);
    perLayer('mlp.down_proj.weight', [h.dim, h.hiddenDim]);
    perLayer('mlp.up_proj.weight', [h.hiddenDim, h.dim]);
  }
  if (!h.sharedClassifier) add('lm_head.weight', [h.vocabSize, h.dim]);
  if (offset !== fileSize) throw new Error('unreachable: llama2.c layout and size formula disagree');
  return { slots, fileSize };
}

/** The exact size in bytes of a llama2.c checkpoint with this header (computed without building the layout). */
function llama2cFileSize(h: Llama2cHeader): number {
  const headSize = h.dim / h.numHeads;
  const kvDim = h.numKvHeads * headSize;
  const perLayer = 2 * h.dim + h.dim * h.dim * 2 + 2 * kvDim * h.dim + 3 * h.hiddenDim * h.dim;
  const rope = h.version === 0 ? h.seqLen * headSize : 0;
  const classifier = h.sharedClassifier ? 0 : h.vocabSize * h.dim;
  return h.headerBytes + 4 * (h.vocabSize * h.dim + h.numLayers * perLayer + h.dim + rope + classifier);
}

/**
 * Read a llama2.c header and check that the file has exactly the size its layout implies.
 * @throws EngineError `TRUNCATED` (file too short) / `MALFORMED` (trailing bytes or bad header).
 */
export async function readLlama2cHeader(source: ByteSource): Promise<{ header: Llama2cHeader; slots: Llama2cTensorSlot[] }> {
  const prefix = await source.read(0, LLAMA2C_V1_HEADER_BYTES);
  const header = parseLlama2cHeader(prefix, source.size, source.name);
  const fileSize = llama2cFileSize(header);
  if (source.size < fileSize) {
    throw new EngineError(
      'TRUNCATED',
      `${source.name}: llama2.c checkpoint (dim ${header.dim}, ${header.numLayers} layers, vocab ${header.vocabSize}) needs ${fileSize} bytes but the file has ${source.size}`,
      { file: source.name },
    );
  }
  if (source.size > fileSize) {
    throw new EngineError(
      'MALFORMED',
      `${source.name}: ${source.size - fileSize} bytes beyond the ${fileSize} a llama2.c checkpoint with this header holds (wrong header?)`,
      { file: source.name },
    );
  }
  const { slots } = llama2cLayout(header);
  return { header, slots };
}

/** A llama2.c `tokenizer.bin`: pieces with their BPE merge scores. */
export interface Llama2cTokenizerFile {
  /** Declared longest piece in bytes. */
  readonly maxTokenLength: number;
  /** Pieces decoded as UTF-8 (spaces are plain `' '`, not `▁`; BOS/EOS are `"\n<s>\n"` / `"\n</s>\n"`). */
  readonly pieces: string[];
  /** Merge score per piece (higher merges first). */
  readonly scores: Float32Array;
}

/**
 * Parse a llama2.c tokenizer file: int32 max_token_length, then per piece float32 score, int32 byte length, bytes.
 * @param vocabSize number of pieces to read; when omitted, pieces are read until the end of the file.
 * @throws EngineError `TRUNCATED` / `MALFORMED`.
 */
export function parseLlama2cTokenizer(bytes: Uint8Array, file: string, vocabSize?: number): Llama2cTokenizerFile {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) throw new EngineError('TRUNCATED', `${file}: too short for a llama2.c tokenizer`, { file });
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0 || maxTokenLength > 1 << 16) {
    throw new EngineError('MALFORMED', `${file}: max_token_length is ${maxTokenLength}`, { file, field: 'max_token_length' });
  }
  const decoder = new TextDecoder('utf-8');
  const pieces: string[] = [];
  const scores: number[] = [];
  let pos = 4;
  while (vocabSize === undefined ? pos < bytes.length : pieces.length < vocabSize) {
    const i = pieces.length;
    if (pos + 8 > bytes.length) {
      throw new EngineError('TRUNCATED', `${file}: ends inside the entry of piece ${i} (expected ${vocabSize ?? 'more'} pieces)`, { file });
    }
    const score = view.getFloat32(pos, true);
    const len = view.getInt32(pos + 4, true);
    pos += 8;
    if (!Number.isFinite(score)) throw new EngineError('MALFORMED', `${file}: piece ${i} has score ${score}`, { file });
    if (len <= 0 || len > maxTokenLength) {
      throw new EngineError('MALFORMED', `${file}: piece ${i} has length ${len} (max_token_length ${maxTokenLength})`, { file });
    }
    if (pos + len > bytes.length) throw new EngineError('TRUNCATED', `${file}: ends inside piece ${i}`, { file });
    pieces.push(decoder.decode(bytes.subarray(pos, pos + len)));
    scores.push(score);
    pos += len;
  }
  if (pos !== bytes.length) {
    throw new EngineError('MALFORMED', `${file}: ${bytes.length - pos} bytes after the ${pieces.length} pieces the model needs`, { file });
  }
  return { maxTokenLength, pieces, scores: Float32Array.from(scores) };
}
