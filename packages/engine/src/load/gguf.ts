import { ChatTemplate } from '../chat/chat-template.js';
import type { GenerationConfig } from '../config/generation-config.js';
import type { Architecture, ModelConfig, RopeScaling } from '../config/model-config.js';
import { EngineError, describeValue } from '../errors.js';
import { ggmlTypeName, GgufMetadata, readGgufHeader, tensorDTypeOfGgml, weightDTypeOfGgml, type GgufFile, type GgufTensorInfo } from '../formats/gguf.js';
import { readTensorData, type ByteSource } from '../io/source.js';
import { isDenseDType, permuteRotaryRows, quantizedByteLength, tensorToFloat32, type Tensor, type WeightDType } from '../tensor.js';
import { ggufTokenizerJson } from '../tokenizer/gguf.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { assembleWeights, checkShape, expectedHfTensors, type ExpectedTensor } from '../weights/model-weights.js';
import { ProgressTracker, type LoadedModel, type LoadedTokenizer, type LoadModelOptions } from './types.js';

/** GGUF architectures and the HF architecture they load as (Mistral GGUFs use `llama`). */
const GGUF_ARCHITECTURES: Record<string, Architecture> = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM' };

/** HF tensor name of a GGUF (llama.cpp) tensor name, or undefined. */
export function hfNameOfGguf(name: string): string | undefined {
  const fixed: Record<string, string> = {
    'token_embd.weight': 'model.embed_tokens.weight',
    'output_norm.weight': 'model.norm.weight',
    'output.weight': 'lm_head.weight',
  };
  if (fixed[name]) return fixed[name];
  const m = /^blk\.(\d+)\.(\w+)\.(weight|bias)$/.exec(name);
  if (!m) return undefined;
  const part: Record<string, string> = {
    attn_norm: 'input_layernorm',
    attn_q: 'self_attn.q_proj',
    attn_k: 'self_attn.k_proj',
    attn_v: 'self_attn.v_proj',
    attn_output: 'self_attn.o_proj',
    ffn_norm: 'post_attention_layernorm',
    ffn_gate: 'mlp.gate_proj',
    ffn_up: 'mlp.up_proj',
    ffn_down: 'mlp.down_proj',
  };
  const p = part[m[2]!];
  return p ? `model.layers.${m[1]}.${p}.${m[3]}` : undefined;
}

/** GGUF tensor name of an HF tensor name (inverse of {@link hfNameOfGguf}). */
export function ggufNameOfHf(name: string): string | undefined {
  const fixed: Record<string, string> = {
    'model.embed_tokens.weight': 'token_embd.weight',
    'model.norm.weight': 'output_norm.weight',
    'lm_head.weight': 'output.weight',
  };
  if (fixed[name]) return fixed[name];
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(name);
  if (!m) return undefined;
  const part: Record<string, string> = {
    input_layernorm: 'attn_norm',
    'self_attn.q_proj': 'attn_q',
    'self_attn.k_proj': 'attn_k',
    'self_attn.v_proj': 'attn_v',
    'self_attn.o_proj': 'attn_output',
    post_attention_layernorm: 'ffn_norm',
    'mlp.gate_proj': 'ffn_gate',
    'mlp.up_proj': 'ffn_up',
    'mlp.down_proj': 'ffn_down',
  };
  const p = part[m[2]!];
  return p ? `blk.${m[1]}.${p}.${m[3]}` : undefined;
}

const DTYPE_NAMES: Record<WeightDType, ModelConfig['torchDtype']> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

/**
 * Normalize GGUF metadata into a {@link ModelConfig} (architecture `llama` or `qwen2`).
 * @throws EngineError `UNSUPPORTED_ARCHITECTURE` / `INVALID_CONFIG` naming the metadata key.
 */
function ggufModelConfig(gguf: GgufFile, eosTokenIds: readonly number[], bosTokenId: number | undefined): ModelConfig {
  const meta = new GgufMetadata(gguf.file, gguf.metadata);
  const file = gguf.file;
  const archName = meta.string('general.architecture');
  const architecture = archName === undefined ? undefined : GGUF_ARCHITECTURES[archName];
  if (!architecture) {
    throw new EngineError(
      'UNSUPPORTED_ARCHITECTURE',
      `${file}: general.architecture ${describeValue(archName)} is not supported (${Object.keys(GGUF_ARCHITECTURES).join(', ')})`,
      { file, field: 'general.architecture' },
    );
  }
  const a = archName!;
  const positive = (key: string, value: number): number => {
    if (!(value > 0)) throw new EngineError('INVALID_CONFIG', `${file}: ${key} is ${value}; expected > 0`, { file, field: key });
    return value;
  };
  const hiddenSize = positive(`${a}.embedding_length`, meta.int(`${a}.embedding_length`));
  const numHeads = positive(`${a}.attention.head_count`, meta.int(`${a}.attention.head_count`));
  const numKvHeads = positive(`${a}.attention.head_count_kv`, meta.int(`${a}.attention.head_count_kv`, numHeads));
  if (numHeads % numKvHeads !== 0) {
    throw new EngineError('INVALID_CONFIG', `${file}: head_count ${numHeads} is not a multiple of head_count_kv ${numKvHeads}`, {
      file,
      field: `${a}.attention.head_count_kv`,
    });
  }
  const headDim = positive(`${a}.attention.key_length`, meta.int(`${a}.attention.key_length`, hiddenSize / numHeads));
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new EngineError('INVALID_CONFIG', `${file}: head dimension ${headDim} must be an even integer`, { file, field: `${a}.attention.key_length` });
  }
  for (const key of [`${a}.attention.value_length`, `${a}.rope.dimension_count`]) {
    const v = meta.optionalInt(key);
    if (v !== undefined && v !== headDim) {
      throw new EngineError('UNSUPPORTED_ARCHITECTURE', `${file}: ${key} ${v} differs from the head dimension ${headDim} (partial rotary / asymmetric heads)`, {
        file,
        field: key,
      });
    }
  }
  const embed = gguf.tensors.get('token_embd.weight');
  const tokenCount = (gguf.metadata.get('tokenizer.ggml.tokens') as unknown[] | undefined)?.length;
  const vocabSize = positive(`${a}.vocab_size`, meta.int(`${a}.vocab_size`, embed?.dims[1] ?? tokenCount ?? 0));
  let ropeScaling: RopeScaling | null = null;
  const scalingType = meta.string(`${a}.rope.scaling.type`);
  if (scalingType === 'linear') {
    ropeScaling = { type: 'linear', factor: positive(`${a}.rope.scaling.factor`, meta.float(`${a}.rope.scaling.factor`)) };
  } else if (scalingType !== undefined && scalingType !== 'none') {
    throw new EngineError('UNSUPPORTED_ARCHITECTURE', `${file}: ${a}.rope.scaling.type ${describeValue(scalingType)} is not supported (none, linear)`, {
      file,
      field: `${a}.rope.scaling.type`,
    });
  }
  const hasBias = gguf.tensors.has('blk.0.attn_q.bias');
  if (architecture === 'Qwen2ForCausalLM' && !hasBias) {
    throw new EngineError('MISSING_TENSOR', `${file}: qwen2 model without blk.0.attn_q.bias`, { file, field: 'blk.0.attn_q.bias' });
  }
  const embedType = embed ? weightDTypeOfGgml(embed.type) : undefined;
  return {
    architecture,
    modelType: architecture === 'Qwen2ForCausalLM' ? 'qwen2' : 'llama',
    hiddenSize,
    numLayers: positive(`${a}.block_count`, meta.int(`${a}.block_count`)),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: positive(`${a}.feed_forward_length`, meta.int(`${a}.feed_forward_length`)),
    vocabSize,
    rmsNormEps: positive(`${a}.attention.layer_norm_rms_epsilon`, meta.float(`${a}.attention.layer_norm_rms_epsilon`, 1e-5)),
    ropeTheta: positive(`${a}.rope.freq_base`, meta.float(`${a}.rope.freq_base`, 10000)),
    ropeScaling,
    ropeLayout: 'rotate_half',
    maxPositionEmbeddings: positive(`${a}.context_length`, meta.int(`${a}.context_length`)),
    tieWordEmbeddings: !gguf.tensors.has('output.weight'),
    attentionBias: hasBias,
    attentionOutputBias: gguf.tensors.has('blk.0.attn_output.bias'),
    slidingWindow: null,
    hiddenAct: 'silu',
    bosTokenId,
    eosTokenIds,
    torchDtype: embedType ? DTYPE_NAMES[embedType] : undefined,
  };
}

/** The special-token ids GGUF metadata declares (EOS plus end-of-turn / end-of-message ids). */
function ggufSpecialIds(meta: GgufMetadata): { bos: number | undefined; eos: number[] } {
  const get = (key: string): number | undefined => {
    const v = meta.optionalInt(key);
    return v === undefined || v < 0 || v === 0xffffffff ? undefined : v;
  };
  const eos = [get('tokenizer.ggml.eos_token_id'), get('tokenizer.ggml.eot_token_id'), get('tokenizer.ggml.eom_token_id')].filter(
    (x): x is number => x !== undefined,
  );
  return { bos: get('tokenizer.ggml.bos_token_id'), eos: [...new Set(eos)] };
}

/** Tokenizer and chat template from GGUF metadata. */
export function ggufTokenizer(gguf: GgufFile): LoadedTokenizer {
  const meta = new GgufMetadata(gguf.file, gguf.metadata);
  const { tokenizer: json, config } = ggufTokenizerJson(meta);
  const ids = ggufSpecialIds(meta);
  const tokenizer = Tokenizer.fromJson(json, { config, bosTokenId: ids.bos, eosTokenIds: ids.eos, file: gguf.file });
  const source = typeof config.chat_template === 'string' ? config.chat_template : undefined;
  return { tokenizer, chatTemplate: source === undefined ? undefined : new ChatTemplate(source, tokenizer.specialTokens, `${gguf.file} tokenizer.chat_template`) };
}

/**
 * Read one GGUF tensor. Dense types become a dense {@link Tensor}; GGML block types keep their raw blocks (a view of
 * an in-memory source, one read of exactly the tensor's bytes from a file: never a float copy).
 * @throws EngineError `UNSUPPORTED_DTYPE` (a ggml type kvq does not load, or a quantized 1-D tensor such as a norm),
 *   `TRUNCATED` (the tensor's data runs past the end of the file), `SHAPE_MISMATCH`.
 */
async function readGgufTensor(source: ByteSource, info: GgufTensorInfo, expected: ExpectedTensor): Promise<Tensor> {
  const dtype = tensorDTypeOfGgml(info.type);
  if (!dtype) {
    throw new EngineError(
      'UNSUPPORTED_DTYPE',
      `${source.name}: tensor ${info.name} has ggml type ${ggmlTypeName(info.type)}; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K`,
      { file: source.name, field: info.name },
    );
  }
  const shape = [...info.dims].reverse();
  checkShape(expected, shape, source.name, info.name);
  const count = shape.reduce((x, y) => x * y, 1);
  if (isDenseDType(dtype)) return { dtype, shape, data: await readTensorData(source, info.offset, count, dtype) };
  if (shape.length !== 2) {
    throw new EngineError(
      'UNSUPPORTED_DTYPE',
      `${source.name}: tensor ${info.name} of shape [${shape.join(', ')}] is ${ggmlTypeName(info.type)}; only 2-D weights may be quantized (norms and biases must be F32/F16/BF16)`,
      { file: source.name, field: info.name },
    );
  }
  const byteLength = quantizedByteLength(dtype, shape[0]!, shape[1]!);
  if (info.offset + byteLength > source.size) {
    throw new EngineError('TRUNCATED', `${source.name}: tensor ${info.name} data ends at byte ${info.offset + byteLength} but the file has ${source.size} bytes`, {
      file: source.name,
      field: info.name,
    });
  }
  const view = source.view(info.offset, byteLength);
  const data = view ?? new Uint8Array(byteLength);
  if (!view) await source.readInto(info.offset, data);
  return { dtype, shape, data };
}

/**
 * Load a GGUF model from a byte source: F32/F16/BF16 tensors, and 2-D weights of the GGML block types Q8_0, Q4_0,
 * Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K kept as their raw blocks (mixed-type files such as Q4_K_M load tensor by tensor). llama.cpp stores `llama` Q/K rows interleaved for
 * its RoPE; they are un-permuted to Hugging Face rotate-half order here (`qwen2` uses NeoX RoPE and is stored
 * unpermuted).
 */
export async function loadGgufFromSource(source: ByteSource, options: LoadModelOptions = {}): Promise<LoadedModel> {
  const gguf = await readGgufHeader(source);
  const meta = new GgufMetadata(gguf.file, gguf.metadata);
  const { tokenizer, chatTemplate } = ggufTokenizer(gguf);
  const ids = ggufSpecialIds(meta);
  const config = ggufModelConfig(gguf, ids.eos, ids.bos);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new EngineError('INVALID_CONFIG', `${gguf.file}: the tokenizer has ${tokenizer.vocabSize} tokens but the embedding has ${config.vocabSize} rows`, {
      file: gguf.file,
      field: 'tokenizer.ggml.tokens',
    });
  }
  const interleaved = config.architecture === 'LlamaForCausalLM';
  // Cheap check before listing 9+ tensors per layer: a corrupt block_count must not allocate millions of entries.
  const lastLayer = `blk.${config.numLayers - 1}.attn_q.weight`;
  if (!gguf.tensors.has(lastLayer)) {
    throw new EngineError('MISSING_TENSOR', `${gguf.file}: tensor ${lastLayer} is missing (block_count ${config.numLayers})`, { file: gguf.file, field: lastLayer });
  }
  const expected = expectedHfTensors(config);
  const located = expected.map((e) => {
    const name = ggufNameOfHf(e.name)!;
    const info = gguf.tensors.get(name);
    if (!info) throw new EngineError('MISSING_TENSOR', `${gguf.file}: tensor ${name} (${e.name}) is missing`, { file: gguf.file, field: name });
    return { e, info };
  });
  const totalBytes = located.reduce((sum, { info }) => sum + (info.byteLength ?? 0), 0);
  const progress = new ProgressTracker(totalBytes, options.onProgress);
  const tensors = new Map<string, Tensor>();
  for (const { e, info } of located) {
    let t = await readGgufTensor(source, info, e);
    const heads = e.slot === 'q' || e.slot === 'qBias' ? config.numHeads : e.slot === 'k' || e.slot === 'kBias' ? config.numKvHeads : 0;
    if (interleaved && heads > 0) {
      // Rows move whole: for block data a "column" of the permutation is one byte of the stored row.
      const rows = t.shape[0]!;
      const rowLength = t.data.length / rows;
      t = { ...t, data: permuteRotaryRows(t.data, rows, rowLength, heads, 'toRotateHalf', info.name) };
    }
    tensors.set(e.name, t);
    progress.add(info.byteLength ?? 0, gguf.file, info.name);
  }
  const warnings: string[] = [];
  const freqs = gguf.tensors.get('rope_freqs.weight');
  let finalConfig = config;
  if (freqs) {
    const t = await readGgufTensor(source, freqs, { name: 'rope_freqs.weight', shape: [config.headDim / 2], layer: undefined, slot: 'finalNorm' });
    finalConfig = { ...config, ropeScaling: { type: 'freq_factors', factors: tensorToFloat32(t).slice() } };
  }
  const known = new Set(located.map(({ info }) => info.name));
  const unused = [...gguf.tensors.keys()].filter((n) => !known.has(n) && n !== 'rope_freqs.weight');
  if (unused.length > 0) warnings.push(`${unused.length} GGUF tensors are not used: ${unused.slice(0, 5).join(', ')}${unused.length > 5 ? ', ...' : ''}`);
  const weights = assembleWeights(finalConfig, tensors, gguf.file);
  const generationConfig: GenerationConfig = {
    ...(ids.bos === undefined ? {} : { bosTokenId: ids.bos }),
    ...(ids.eos.length === 0 ? {} : { eosTokenIds: ids.eos }),
  };
  return {
    format: 'gguf',
    path: source.name,
    config: finalConfig,
    weights,
    tokenizer,
    chatTemplate,
    generationConfig,
    kvScales: undefined,
    checkpointKvScales: undefined,
    warnings,
  };
}
