/**
 * Hugging Face model → GGUF file (what `kvq convert --outtype` and the GGUF schemes of `kvq quantize` write): llama.cpp
 * metadata and tensor names, Q/K rows permuted to llama.cpp's interleaved RoPE order for `llama`, norms and biases in
 * F32, matrices in the requested dense or GGML block type (quantized by `@kvq/kernels`' `quantizeMatrix`), the
 * byte-level BPE tokenizer as `gpt2` metadata. kvq's GGUF loader reads the result back.
 * @module
 */
import { quantizeMatrix } from '@kvq/kernels';
import { f32ToBf16Bits, f32ToF16Bits } from '@kvq/fp8';

import type { ModelConfig } from '../config/model-config.js';
import { EngineError, describeValue } from '../errors.js';
import { GgufValueType } from '../formats/gguf.js';
import { writeGguf, type GgmlTensorType, type GgufEntry, type GgufTensorData, type GgufTensorSpec } from '../formats/gguf-writer.js';
import { ggufNameOfHf } from '../load/gguf.js';
import type { LoadedModel } from '../load/types.js';
import { isDenseDType, permuteRotaryRows, tensorToFloat32, type GgmlWeightDtype, type Tensor } from '../tensor.js';
import { weightsByHfName } from '../weights/model-weights.js';

/** A tensor type of a written GGUF: dense or a GGML block type (engine spelling). */
export type GgufOutType = 'f32' | 'f16' | 'bf16' | GgmlWeightDtype;

/** Every {@link GgufOutType}, for `--outtype` validation. */
export const GGUF_OUT_TYPES: readonly GgufOutType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k'];

/** Options of {@link writeModelAsGguf}. */
export interface WriteGgufOptions {
  /**
   * The type of each 2-D tensor, by GGUF name and row length (`ne0`). 1-D tensors (norms, biases) are always F32.
   * A block type whose block size does not divide the row is an `INVALID_ARGUMENT` error.
   */
  readonly typeOf: (ggufName: string, cols: number) => GgufOutType;
  /** `general.file_type` (llama.cpp `llama_ftype`). */
  readonly fileType: number;
  /** `general.name`. Default: the last path component of the model. */
  readonly name?: string | undefined;
}

/** What {@link writeModelAsGguf} wrote. */
export interface WriteGgufResult {
  readonly path: string;
  /** File size in bytes. */
  readonly bytes: number;
  /** GGUF tensor name → type written. */
  readonly types: ReadonlyMap<string, GgufOutType>;
}

const GGUF_ARCH: Partial<Record<ModelConfig['architecture'], string>> = { LlamaForCausalLM: 'llama', MistralForCausalLM: 'llama', Qwen2ForCausalLM: 'qwen2' };

/** The GGUF type name (`Q4_K`) of an out type. */
function ggmlName(t: GgufOutType): GgmlTensorType {
  return t.toUpperCase() as GgmlTensorType;
}

/** Byte-level BPE tokenizer metadata (`tokenizer.ggml.model = gpt2`) of a loaded model, as llama.cpp's converter writes it. */
function tokenizerMetadata(model: LoadedModel): GgufEntry[] {
  const tok = model.tokenizer;
  const json = tok.json as { model?: { type?: string; merges?: unknown[] }; pre_tokenizer?: unknown };
  if (json.model?.type !== 'BPE' || !Array.isArray(json.model.merges)) {
    throw new EngineError('INVALID_ARGUMENT', `${model.path}: only byte-level BPE tokenizers (with merges) can be written to GGUF here`, { file: model.path, field: 'tokenizer' });
  }
  const preJson = JSON.stringify(json.pre_tokenizer ?? null);
  // llama.cpp names the pre-tokenizer regex: Qwen2's, Llama 3's (`(?i:'s|'t|...)`), else GPT-2's.
  const pre = model.config.architecture === 'Qwen2ForCausalLM' ? 'qwen2' : preJson.includes("(?i:'s|'t|'re|'ve|'m|'ll|'d)") ? 'llama-bpe' : 'gpt-2';
  const tokens = Array.from({ length: tok.vocabSize }, (_, i) => tok.idToToken(i) ?? `[PAD${i}]`);
  const special = new Set(tok.addedTokens.filter((t) => t.special).map((t) => t.id));
  const merges = json.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : String(m)));
  const { STRING, ARRAY, INT32, BOOL, UINT32 } = GgufValueType;
  const out: GgufEntry[] = [
    { key: 'tokenizer.ggml.model', type: STRING, value: 'gpt2' },
    { key: 'tokenizer.ggml.pre', type: STRING, value: pre },
    { key: 'tokenizer.ggml.tokens', type: ARRAY, itemType: STRING, value: tokens },
    { key: 'tokenizer.ggml.token_type', type: ARRAY, itemType: INT32, value: tokens.map((_, i) => (special.has(i) ? 3 : 1)) },
    { key: 'tokenizer.ggml.merges', type: ARRAY, itemType: STRING, value: merges },
    { key: 'tokenizer.ggml.add_bos_token', type: BOOL, value: tok.addsBos },
  ];
  if (tok.bosTokenId !== undefined) out.push({ key: 'tokenizer.ggml.bos_token_id', type: UINT32, value: tok.bosTokenId });
  const [eos, eot] = [...new Set([...tok.eosTokenIds, ...(model.generationConfig.eosTokenIds ?? []), ...model.config.eosTokenIds])];
  if (eos !== undefined) out.push({ key: 'tokenizer.ggml.eos_token_id', type: UINT32, value: eos });
  if (eot !== undefined) out.push({ key: 'tokenizer.ggml.eot_token_id', type: UINT32, value: eot });
  if (model.chatTemplate) out.push({ key: 'tokenizer.chat_template', type: STRING, value: model.chatTemplate.source });
  return out;
}

/** llama.cpp hyper-parameter metadata of a config. */
function modelMetadata(c: ModelConfig, arch: string, name: string, fileType: number): GgufEntry[] {
  const { STRING, UINT32, FLOAT32 } = GgufValueType;
  const u32 = (key: string, value: number): GgufEntry => ({ key: `${arch}.${key}`, type: UINT32, value });
  const f32 = (key: string, value: number): GgufEntry => ({ key: `${arch}.${key}`, type: FLOAT32, value });
  const out: GgufEntry[] = [
    { key: 'general.architecture', type: STRING, value: arch },
    { key: 'general.name', type: STRING, value: name },
    { key: 'general.file_type', type: UINT32, value: fileType },
    { key: 'general.quantization_version', type: UINT32, value: 2 },
    u32('context_length', c.maxPositionEmbeddings),
    u32('embedding_length', c.hiddenSize),
    u32('block_count', c.numLayers),
    u32('feed_forward_length', c.intermediateSize),
    u32('attention.head_count', c.numHeads),
    u32('attention.head_count_kv', c.numKvHeads),
    u32('attention.key_length', c.headDim),
    u32('attention.value_length', c.headDim),
    u32('rope.dimension_count', c.headDim),
    u32('vocab_size', c.vocabSize),
    f32('attention.layer_norm_rms_epsilon', c.rmsNormEps),
    f32('rope.freq_base', c.ropeTheta),
  ];
  if (c.ropeScaling?.type === 'linear') {
    out.push({ key: `${arch}.rope.scaling.type`, type: STRING, value: 'linear' }, f32('rope.scaling.factor', c.ropeScaling.factor));
  }
  return out;
}

/** A dense tensor's values in a dense GGUF type (bit-exact when the type is the tensor's own or wider). */
function denseData(t: Tensor, type: 'f32' | 'f16' | 'bf16'): Float32Array | Uint16Array {
  if (t.dtype === type) return (t.data as Float32Array | Uint16Array).slice();
  const values = tensorToFloat32(t);
  if (type === 'f32') return values.slice();
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = type === 'f16' ? f32ToF16Bits(values[i]!) : f32ToBf16Bits(values[i]!);
  return out;
}

/**
 * Write a loaded Hugging Face model (Llama, Mistral or Qwen2; dense weights) as a GGUF v3 file, one tensor at a time.
 * Quantized tensors are produced from the float32 values of the stored weights (`quantizeMatrix`, llama.cpp's
 * reference rounding as implemented by `@kvq/kernels`; no importance matrix).
 * @throws EngineError `INVALID_ARGUMENT` (architecture without a GGUF mapping, RoPE scaling other than linear,
 *   quantized source weights, non-BPE tokenizer, a block type not dividing a row), `IO_ERROR`.
 */
export async function writeModelAsGguf(model: LoadedModel, path: string, options: WriteGgufOptions): Promise<WriteGgufResult> {
  const c = model.config;
  const arch = GGUF_ARCH[c.architecture];
  if (!arch) {
    throw new EngineError('INVALID_ARGUMENT', `${model.path}: ${c.architecture} cannot be written as GGUF here (Llama, Mistral, Qwen2)`, { file: model.path, field: 'architecture' });
  }
  if (c.ropeScaling !== null && c.ropeScaling.type !== 'linear') {
    throw new EngineError('INVALID_ARGUMENT', `${model.path}: rope scaling ${describeValue(c.ropeScaling.type)} cannot be written as GGUF here (none, linear)`, { file: model.path, field: 'rope_scaling' });
  }
  if (c.slidingWindow !== null) {
    throw new EngineError('INVALID_ARGUMENT', `${model.path}: sliding_window ${c.slidingWindow} has no GGUF key for ${arch}; refusing to drop it`, { file: model.path, field: 'sliding_window' });
  }
  const name = options.name ?? model.path.split(/[\\/]/).filter(Boolean).pop() ?? 'model';
  const permute = arch === 'llama';
  const types = new Map<string, GgufOutType>();
  const tensors: GgufTensorSpec[] = [];
  for (const [hfName, t] of weightsByHfName(c, model.weights)) {
    if (!isDenseDType(t.dtype)) {
      throw new EngineError('INVALID_ARGUMENT', `${model.path}: tensor ${hfName} is ${t.dtype}; GGUF conversion needs dense (f32/f16/bf16) weights`, { file: model.path, field: hfName });
    }
    const ggufName = ggufNameOfHf(hfName);
    if (ggufName === undefined) throw new EngineError('INVALID_ARGUMENT', `tensor ${hfName} has no GGUF name`, { field: hfName });
    const rows = t.shape[0]!;
    const cols = t.shape.length === 2 ? t.shape[1]! : 1;
    const type: GgufOutType = t.shape.length === 1 ? 'f32' : options.typeOf(ggufName, cols);
    if (!GGUF_OUT_TYPES.includes(type)) throw new EngineError('INVALID_ARGUMENT', `tensor ${ggufName}: GGUF type ${describeValue(type)} is not one of ${GGUF_OUT_TYPES.join(', ')}`, { field: ggufName });
    types.set(ggufName, type);
    const heads = permute && /\.q_proj\./.test(hfName) ? c.numHeads : permute && /\.k_proj\./.test(hfName) ? c.numKvHeads : 0;
    tensors.push({
      name: ggufName,
      dims: [...t.shape].reverse(),
      type: ggmlName(type),
      data: (): GgufTensorData => {
        let data: GgufTensorData;
        if (type === 'f32' || type === 'f16' || type === 'bf16') {
          data = denseData(t, type);
        } else {
          try {
            data = quantizeMatrix(tensorToFloat32(t), rows, cols, type).data as Uint8Array;
          } catch (cause) {
            throw new EngineError('INVALID_ARGUMENT', `tensor ${ggufName} [${rows}, ${cols}] cannot be quantized to ${type}: ${(cause as Error).message}`, { field: ggufName, cause });
          }
        }
        // Whole stored rows move; for block data one permutation "column" is one byte of the row.
        return heads > 0 ? permuteRotaryRows(data, rows, data.length / rows, heads, 'toInterleaved', hfName) : data;
      },
    });
  }
  const bytes = await writeGguf(path, [...modelMetadata(c, arch, name, options.fileType), ...tokenizerMetadata(model)], tensors);
  return { path, bytes, types };
}

/** llama.cpp `general.file_type` for a single-type file (`--outtype`): F32 0, F16 1, BF16 32, Q4_0 2, ..., Q6_K 18. */
export function fileTypeOf(type: GgufOutType): number {
  const table: Record<GgufOutType, number> = { f32: 0, f16: 1, bf16: 32, q4_0: 2, q4_1: 3, q8_0: 7, q5_0: 8, q5_1: 9, q4_k: 15, q5_k: 17, q6_k: 18 };
  return table[type];
}
