import { KernelError, ropeInvFreq, ropeScalingFromHf, type RopeScaling as KernelRopeScaling } from '@kvq/kernels';

import { EngineError, describeValue } from '../errors.js';
import { parseFamilyFields, parseSlidingWindows, type FamilyFields } from './families.js';

/** Hugging Face architectures this engine runs (`Gemma3ForConditionalGeneration` loads as its text part). */
export type Architecture =
  | 'LlamaForCausalLM'
  | 'MistralForCausalLM'
  | 'Qwen2ForCausalLM'
  | 'Qwen3ForCausalLM'
  | 'Gemma2ForCausalLM'
  | 'Gemma3ForCausalLM'
  | 'Phi3ForCausalLM';

/** The supported architectures, in the order error messages list them. */
export const SUPPORTED_ARCHITECTURES: readonly Architecture[] = [
  'LlamaForCausalLM',
  'MistralForCausalLM',
  'Qwen2ForCausalLM',
  'Qwen3ForCausalLM',
  'Gemma2ForCausalLM',
  'Gemma3ForCausalLM',
  'Phi3ForCausalLM',
];

/**
 * transformers' `Gemma3TextConfig` defaults for the fields kvq reads (configuration_gemma3.py): applied to absent
 * fields, since Hub multimodal configs (`google/gemma-3-4b-it` ...) serialise only what differs from them.
 */
const GEMMA3_TEXT_DEFAULTS: Readonly<Json> = {
  vocab_size: 262208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  bos_token_id: 2,
  eos_token_id: 1,
};

/** Multimodal wrappers whose `text_config` is loaded (vision tensors are left unused, with the loader's warning). */
const TEXT_WRAPPERS: Readonly<Record<string, Architecture>> = { Gemma3ForConditionalGeneration: 'Gemma3ForCausalLM' };

/**
 * RoPE frequency scaling.
 * - `llama3`: Llama 3.1/3.2 wavelength-dependent scaling (HF `rope_type: "llama3"`).
 * - `linear`: positions divided by `factor` (HF `rope_type: "linear"`).
 * - `freq_factors`: per-frequency divisors of length `headDim / 2` (GGUF `rope_freqs.weight`, how llama.cpp stores
 *   Llama 3.1 scaling).
 * Use {@link ropeInverseFrequencies} to get the scaled inverse frequencies.
 */
export type RopeScaling =
  | {
      readonly type: 'llama3';
      readonly factor: number;
      readonly lowFreqFactor: number;
      readonly highFreqFactor: number;
      readonly originalMaxPositionEmbeddings: number;
    }
  | { readonly type: 'linear'; readonly factor: number }
  | { readonly type: 'freq_factors'; readonly factors: Float32Array }
  /** `yarn`, `dynamic` (NTK) and `longrope` (`su`): the kernels' scaling object as is (`@kvq/kernels` `RopeScaling`). */
  | Extract<KernelRopeScaling, { type: 'yarn' | 'dynamic' | 'longrope' }>;

/** Attention span of a layer (transformers' `layer_types`). */
export type LayerType = 'full_attention' | 'sliding_attention';

/**
 * Normalized model hyper-parameters, identical whatever file format the model came from.
 * NOTE: `ropeLayout` is always `'rotate_half'`: loaders un-permute interleaved Q/K rows (llama2.c, GGUF `llama`)
 * into Hugging Face order, so RoPE rotates dimension pairs `(j, j + headDim/2)` of each head.
 */
export interface ModelConfig extends FamilyFields {
  readonly architecture: Architecture;
  /** HF `model_type` (`gemma3_text` for Gemma 3, also when read from a multimodal config's `text_config`). */
  readonly modelType: 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gemma2' | 'gemma3_text' | 'phi3';
  readonly hiddenSize: number;
  readonly numLayers: number;
  /** Query heads. */
  readonly numHeads: number;
  /** Key/value heads (grouped-query attention when smaller than `numHeads`). */
  readonly numKvHeads: number;
  /** Per-head dimension (may differ from `hiddenSize / numHeads` when the config overrides it). */
  readonly headDim: number;
  /** SwiGLU inner size. */
  readonly intermediateSize: number;
  /** Rows of the embedding / LM head. */
  readonly vocabSize: number;
  readonly rmsNormEps: number;
  /** RoPE base θ. */
  readonly ropeTheta: number;
  readonly ropeScaling: RopeScaling | null;
  readonly ropeLayout: 'rotate_half';
  /** Context length the model was configured for. */
  readonly maxPositionEmbeddings: number;
  /** The LM head is the embedding matrix (the weights object then holds the same tensor twice). */
  readonly tieWordEmbeddings: boolean;
  /** q/k/v projections have biases (Qwen2; Llama with `attention_bias`). */
  readonly attentionBias: boolean;
  /** The output projection has a bias (Llama with `attention_bias`; not Qwen2). */
  readonly attentionOutputBias: boolean;
  /**
   * Sliding-window attention span in tokens (a token attends to itself and the `slidingWindow - 1` before it), or
   * null for full attention. Applies to every layer unless `layerTypes` says which layers slide.
   */
  readonly slidingWindow: number | null;
  /** MLP activation: SwiGLU (`silu`) or GeGLU with the tanh approximation (`gelu_pytorch_tanh`, Gemma). */
  readonly hiddenAct: 'silu' | 'gelu_pytorch_tanh';
  readonly bosTokenId: number | undefined;
  /** Generation stops on any of these (from generation_config.json when present, else config.json). */
  readonly eosTokenIds: readonly number[];
  /** Checkpoint dtype as declared (`torch_dtype` / GGUF tensor types), for information. */
  readonly torchDtype: 'float32' | 'float16' | 'bfloat16' | undefined;
}

type Json = Record<string, unknown>;

/** @internal Typed reads of a config.json object (shared with the family parsers). */
export class ConfigReader {
  constructor(
    readonly json: Json,
    readonly file: string,
  ) {}
  private fail(key: string, want: string, value: unknown): EngineError {
    return new EngineError('INVALID_CONFIG', `${this.file}: ${key} should be ${want}, got ${describeValue(value)}`, {
      file: this.file,
      field: key,
    });
  }
  positiveInt(key: string, fallback?: number): number {
    const v = this.json[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new EngineError('INVALID_CONFIG', `${this.file}: required field ${key} is missing`, { file: this.file, field: key });
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw this.fail(key, 'a positive integer', v);
    return v;
  }
  positiveNumber(key: string, fallback: number, obj: Json = this.json, prefix = ''): number {
    const v = obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw this.fail(prefix + key, 'a positive number', v);
    return v;
  }
  bool(key: string, fallback: boolean): boolean {
    const v = this.json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw this.fail(key, 'a boolean', v);
    return v;
  }
  tokenIds(key: string): number[] | undefined {
    const v = this.json[key];
    if (v === undefined || v === null) return undefined;
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) throw this.fail(key, 'a token id or list of ids', v);
    return list as number[];
  }
}

const MODEL_TYPES: Record<Architecture, ModelConfig['modelType']> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  Gemma2ForCausalLM: 'gemma2',
  Gemma3ForCausalLM: 'gemma3_text',
  Phi3ForCausalLM: 'phi3',
};

/** HF defaults that differ by architecture (transformers' LlamaConfig / MistralConfig / Qwen2Config). */
const DEFAULTS: Record<Architecture, { maxPositionEmbeddings: number; rmsNormEps: number }> = {
  LlamaForCausalLM: { maxPositionEmbeddings: 2048, rmsNormEps: 1e-6 },
  MistralForCausalLM: { maxPositionEmbeddings: 4096 * 32, rmsNormEps: 1e-6 },
  Qwen2ForCausalLM: { maxPositionEmbeddings: 32768, rmsNormEps: 1e-6 },
  Qwen3ForCausalLM: { maxPositionEmbeddings: 32768, rmsNormEps: 1e-6 },
  Gemma2ForCausalLM: { maxPositionEmbeddings: 8192, rmsNormEps: 1e-6 },
  Gemma3ForCausalLM: { maxPositionEmbeddings: 131072, rmsNormEps: 1e-6 },
  Phi3ForCausalLM: { maxPositionEmbeddings: 4096, rmsNormEps: 1e-5 },
};

/** Model-level fields the newer RoPE types read. */
interface RopeContext {
  readonly maxPositionEmbeddings: number;
  readonly originalMaxPositionEmbeddings: number | undefined;
  readonly headDim: number;
}

function parseRopeScaling(value: unknown, reader: ConfigReader, field: string, ctx?: RopeContext): RopeScaling | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new EngineError('INVALID_CONFIG', `${reader.file}: ${field} should be an object or null, got ${describeValue(value)}`, {
      file: reader.file,
      field,
    });
  }
  const obj = value as Json;
  const type = obj.rope_type ?? obj.type;
  if (type === 'default' || type === undefined) return null;
  if (type === 'llama3') {
    const orig = obj.original_max_position_embeddings;
    if (typeof orig !== 'number' || !Number.isSafeInteger(orig) || orig <= 0) {
      throw new EngineError('INVALID_CONFIG', `${reader.file}: ${field}.original_max_position_embeddings should be a positive integer, got ${describeValue(orig)}`, {
        file: reader.file,
        field: `${field}.original_max_position_embeddings`,
      });
    }
    const scaling: RopeScaling = {
      type: 'llama3',
      factor: reader.positiveNumber('factor', 8, obj, `${field}.`),
      lowFreqFactor: reader.positiveNumber('low_freq_factor', 1, obj, `${field}.`),
      highFreqFactor: reader.positiveNumber('high_freq_factor', 4, obj, `${field}.`),
      originalMaxPositionEmbeddings: orig,
    };
    if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
      throw new EngineError('INVALID_CONFIG', `${reader.file}: ${field}.high_freq_factor must exceed low_freq_factor`, {
        file: reader.file,
        field: `${field}.high_freq_factor`,
      });
    }
    return scaling;
  }
  if (type === 'linear') return { type: 'linear', factor: reader.positiveNumber('factor', 1, obj, `${field}.`) };
  if (ctx && (type === 'yarn' || type === 'dynamic' || type === 'longrope' || type === 'su')) {
    try {
      const s = ropeScalingFromHf(obj, {
        maxPositionEmbeddings: ctx.maxPositionEmbeddings,
        originalMaxPositionEmbeddings: ctx.originalMaxPositionEmbeddings,
        rotaryDim: ctx.headDim,
      });
      if (s?.type === 'yarn' || s?.type === 'dynamic' || s?.type === 'longrope') {
        ropeInvFreq({ rotaryDim: ctx.headDim, theta: 10000, scaling: s }); // validates every field now, not at the first forward
        return s;
      }
    } catch (cause) {
      if (!(cause instanceof KernelError)) throw cause;
      const sub = (cause.argument ?? '').replace(/^rope_scaling\.?/, '').replace(/^scaling\.?/, '');
      throw new EngineError('INVALID_CONFIG', `${reader.file}: ${field}: ${cause.message}`, { file: reader.file, field: sub ? `${field}.${sub}` : field, cause });
    }
  }
  throw new EngineError('UNSUPPORTED_ARCHITECTURE', `${reader.file}: ${field} type ${describeValue(type)} is not supported (llama3, linear, yarn, dynamic, longrope, su, default)`, {
    file: reader.file,
    field: `${field}.rope_type`,
  });
}

/**
 * Normalize a Hugging Face `config.json`.
 * @param generationEos EOS ids from generation_config.json, which take precedence over config.json's.
 * @throws EngineError `UNSUPPORTED_ARCHITECTURE` (other architectures, `hidden_act` other than silu, MLP biases,
 *   Qwen2 sliding windows, unsupported RoPE scaling) / `INVALID_CONFIG` (missing or invalid fields).
 */
export function parseHfConfig(json: unknown, file = 'config.json', generationEos?: readonly number[]): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new EngineError('INVALID_CONFIG', `${file}: must be a JSON object`, { file });
  }
  const outer = json as Json;
  const archs = outer.architectures;
  let arch = Array.isArray(archs) ? archs.find((a): a is Architecture => SUPPORTED_ARCHITECTURES.includes(a as Architecture)) : undefined;
  let j = outer;
  let tensorPrefix: string | undefined;
  const wrapper = !arch && Array.isArray(archs) ? archs.find((a) => typeof a === 'string' && a in TEXT_WRAPPERS) : undefined;
  if (wrapper !== undefined) {
    const text = outer.text_config;
    if (typeof text !== 'object' || text === null || Array.isArray(text)) {
      throw new EngineError('INVALID_CONFIG', `${file}: ${wrapper} needs a text_config object, got ${describeValue(text)}`, { file, field: 'text_config' });
    }
    arch = TEXT_WRAPPERS[wrapper as string]!;
    // The text part inherits the wrapper's token ids and dtype when it does not set them.
    j = { torch_dtype: outer.torch_dtype, eos_token_id: outer.eos_token_id, bos_token_id: outer.bos_token_id };
    for (const [key, value] of Object.entries(text as Json)) if ((value !== undefined && value !== null) || !(key in j)) j[key] = value;
    tensorPrefix = 'language_model.';
  }
  if (arch === 'Gemma3ForCausalLM') {
    // Multimodal Gemma 3 configs store only the text fields that differ from Gemma3TextConfig's defaults.
    for (const [key, value] of Object.entries(GEMMA3_TEXT_DEFAULTS)) if (j[key] === undefined) j = { ...j, [key]: value };
  }
  const r = new ConfigReader(j, wrapper !== undefined ? `${file} text_config` : file);
  if (!arch) {
    throw new EngineError(
      'UNSUPPORTED_ARCHITECTURE',
      `${file}: architectures ${describeValue(archs)} is not supported (supported: ${[...SUPPORTED_ARCHITECTURES, ...Object.keys(TEXT_WRAPPERS)].join(', ')})`,
      { file, field: 'architectures' },
    );
  }
  const gemma = arch === 'Gemma2ForCausalLM' || arch === 'Gemma3ForCausalLM';
  const actField = gemma && j.hidden_activation !== undefined && j.hidden_activation !== null ? 'hidden_activation' : 'hidden_act';
  const act = j[actField] ?? (gemma ? 'gelu_pytorch_tanh' : 'silu');
  const wantAct = gemma ? 'gelu_pytorch_tanh' : 'silu';
  if (act !== wantAct) {
    throw new EngineError('UNSUPPORTED_ARCHITECTURE', `${file}: ${actField} ${describeValue(act)} is not supported for ${arch} (${wantAct})`, { file, field: actField });
  }
  if (j.mlp_bias === true) {
    throw new EngineError('UNSUPPORTED_ARCHITECTURE', `${file}: mlp_bias true is not supported`, { file, field: 'mlp_bias' });
  }
  const hiddenSize = r.positiveInt('hidden_size');
  const numHeads = r.positiveInt('num_attention_heads');
  const numKvHeads = r.positiveInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new EngineError('INVALID_CONFIG', `${file}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`, {
      file,
      field: 'num_key_value_heads',
    });
  }
  const defaultHeadDim = arch === 'Qwen3ForCausalLM' ? 128 : gemma ? 256 : hiddenSize / numHeads;
  const headDim = r.positiveInt('head_dim', Number.isInteger(defaultHeadDim) ? defaultHeadDim : undefined);
  if (headDim % 2 !== 0) {
    throw new EngineError('INVALID_CONFIG', `${file}: head_dim ${headDim} must be even for RoPE`, { file, field: 'head_dim' });
  }
  const numLayers = r.positiveInt('num_hidden_layers');
  const maxPositionEmbeddings = r.positiveInt('max_position_embeddings', DEFAULTS[arch].maxPositionEmbeddings);
  const rawParams = typeof j.rope_parameters === 'object' && j.rope_parameters !== null ? (j.rope_parameters as Json) : undefined;
  // Newer Gemma 3 configs key rope_parameters by layer type; the global RoPE is full_attention's.
  const nested = rawParams && typeof rawParams.full_attention === 'object' && rawParams.full_attention !== null;
  const ropeParameters = nested ? (rawParams.full_attention as Json) : rawParams;
  const ropeField = nested ? 'rope_parameters.full_attention' : 'rope_parameters';
  const ropeTheta = r.positiveNumber('rope_theta', ropeParameters ? r.positiveNumber('rope_theta', gemma && arch === 'Gemma3ForCausalLM' ? 1e6 : 10000, ropeParameters, `${ropeField}.`) : arch === 'Gemma3ForCausalLM' ? 1e6 : 10000);
  const partial = j.partial_rotary_factor ?? ropeParameters?.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1) {
    throw new EngineError('UNSUPPORTED_ARCHITECTURE', `${file}: partial_rotary_factor ${describeValue(partial)} is not supported (1)`, {
      file,
      field: 'partial_rotary_factor',
    });
  }
  const origMax = j.original_max_position_embeddings;
  const ropeCtx: RopeContext = {
    maxPositionEmbeddings,
    originalMaxPositionEmbeddings: typeof origMax === 'number' && Number.isSafeInteger(origMax) && origMax > 0 ? origMax : undefined,
    headDim,
  };
  const parseRope = (value: unknown, field: string): RopeScaling | null => parseRopeScaling(value, r, field, ropeCtx);
  const ropeScaling =
    j.rope_scaling !== undefined && j.rope_scaling !== null ? parseRope(j.rope_scaling, 'rope_scaling') : parseRope(ropeParameters, ropeField);
  const { slidingWindow, layerTypes } = parseSlidingWindows(r, arch, numLayers);
  const qwen = arch === 'Qwen2ForCausalLM';
  const attentionBias = qwen ? true : r.bool('attention_bias', false);
  const dtype = j.torch_dtype ?? j.dtype;
  const torchDtype = dtype === 'float32' || dtype === 'float16' || dtype === 'bfloat16' ? dtype : undefined;
  const family = parseFamilyFields(r, { arch, numLayers, hiddenSize, headDim, torchDtype, parseRope });
  const eos = generationEos && generationEos.length > 0 ? [...generationEos] : (r.tokenIds('eos_token_id') ?? []);
  return {
    architecture: arch,
    modelType: MODEL_TYPES[arch],
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: r.positiveInt('intermediate_size'),
    vocabSize: r.positiveInt('vocab_size'),
    rmsNormEps: r.positiveNumber('rms_norm_eps', DEFAULTS[arch].rmsNormEps),
    ropeTheta,
    ropeScaling,
    ropeLayout: 'rotate_half',
    maxPositionEmbeddings,
    tieWordEmbeddings: r.bool('tie_word_embeddings', gemma),
    attentionBias,
    attentionOutputBias: qwen ? false : attentionBias,
    slidingWindow,
    hiddenAct: wantAct,
    bosTokenId: r.tokenIds('bos_token_id')?.[0],
    eosTokenIds: eos,
    torchDtype,
    ...family,
    ...(layerTypes ? { layerTypes } : {}),
    ...(tensorPrefix ? { tensorPrefix } : {}),
  };
}

/**
 * Write a {@link ModelConfig} as a Hugging Face `config.json` object that {@link parseHfConfig} reads back to an
 * equal config.
 * @throws EngineError `INVALID_ARGUMENT` for `freq_factors` RoPE scaling, which config.json cannot express, and for the
 *   families other than Llama / Mistral / Qwen2 and the yarn / dynamic / longrope scalings (not written yet).
 */
export function toHfConfigJson(config: ModelConfig): Record<string, unknown> {
  if (config.modelType !== 'llama' && config.modelType !== 'mistral' && config.modelType !== 'qwen2') {
    throw new EngineError('INVALID_ARGUMENT', `writing config.json for ${config.architecture} is not supported (Llama, Mistral, Qwen2 only)`, {
      field: 'architecture',
    });
  }
  if (config.layerTypes) {
    throw new EngineError('INVALID_ARGUMENT', 'per-layer sliding windows have no config.json form kvq writes', { field: 'layerTypes' });
  }
  let ropeScaling: Record<string, unknown> | null = null;
  const s = config.ropeScaling;
  if (s?.type === 'llama3') {
    ropeScaling = {
      rope_type: 'llama3',
      factor: s.factor,
      low_freq_factor: s.lowFreqFactor,
      high_freq_factor: s.highFreqFactor,
      original_max_position_embeddings: s.originalMaxPositionEmbeddings,
    };
  } else if (s?.type === 'linear') {
    ropeScaling = { rope_type: 'linear', factor: s.factor };
  } else if (s?.type === 'freq_factors') {
    throw new EngineError('INVALID_ARGUMENT', 'RoPE frequency factors (GGUF rope_freqs) have no config.json equivalent', {
      field: 'ropeScaling',
    });
  } else if (s) {
    throw new EngineError('INVALID_ARGUMENT', `writing ${s.type} RoPE scaling to config.json is not supported`, { field: 'ropeScaling' });
  }
  const json: Record<string, unknown> = {
    architectures: [config.architecture],
    model_type: config.modelType,
    hidden_act: config.hiddenAct,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling: ropeScaling,
    tie_word_embeddings: config.tieWordEmbeddings,
    torch_dtype: config.torchDtype ?? 'float32',
    use_cache: true,
  };
  if (config.modelType !== 'qwen2') {
    json.attention_bias = config.attentionBias;
    json.mlp_bias = false;
  }
  if (config.modelType === 'mistral') json.sliding_window = config.slidingWindow;
  if (config.modelType === 'qwen2') json.use_sliding_window = false;
  if (config.bosTokenId !== undefined) json.bos_token_id = config.bosTokenId;
  if (config.eosTokenIds.length > 0) json.eos_token_id = config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : [...config.eosTokenIds];
  return json;
}

/**
 * RoPE inverse frequencies `θ^(-2i/headDim)` for `i < headDim/2`, with the config's scaling applied
 * (llama3 per transformers' `_compute_llama3_parameters`; linear divides by the factor; freq_factors divides by
 * each factor). Element i rotates the pair `(i, i + headDim/2)` of each head (rotate-half layout).
 */
export function ropeInverseFrequencies(config: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float64Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / config.ropeTheta ** ((2 * i) / config.headDim);
  const s = config.ropeScaling;
  if (!s) return inv;
  if (s.type === 'linear') return inv.map((f) => f / s.factor);
  if (s.type === 'yarn' || s.type === 'dynamic' || s.type === 'longrope') {
    // The kernels' float32 frequencies (longrope: the short-context set; dynamic: unscaled up to maxPositions).
    return Float64Array.from(ropeInvFreq({ rotaryDim: config.headDim, theta: config.ropeTheta, scaling: s }));
  }
  if (s.type === 'freq_factors') {
    if (s.factors.length !== half) {
      throw new EngineError('SHAPE_MISMATCH', `rope frequency factors have ${s.factors.length} entries, expected headDim/2 = ${half}`, {
        field: 'ropeScaling.factors',
      });
    }
    return inv.map((f, i) => f / s.factors[i]!);
  }
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen > lowWavelen) return f / s.factor;
    if (wavelen < highWavelen) return f;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return ((1 - smooth) * f) / s.factor + smooth * f;
  });
}
