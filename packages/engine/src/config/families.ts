/**
 * The config.json fields of the model families beyond Llama (Qwen3, Gemma 2, Gemma 3 text, Phi-3) and the
 * per-layer sliding-window rules (Mistral, Qwen2/3, Gemma, Phi-3), normalized into {@link FamilyFields}.
 * @see docs/spec/architectures.md for each fact and its transformers source.
 * @module
 */
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '@kvq/fp8';

import { EngineError, describeValue } from '../errors.js';
import type { Architecture, ConfigReader, LayerType, RopeScaling } from './model-config.js';

/**
 * Per-family options of a {@link import('./model-config.js').ModelConfig}. Every field is optional; absent means
 * the Llama behaviour, so configs built by the GGUF and llama2.c loaders need none of them.
 */
export interface FamilyFields {
  /**
   * Attention span of each layer (`numLayers` entries). Absent: every layer uses `slidingWindow` when it is set
   * (Mistral, Phi-3), else full attention.
   */
  readonly layerTypes?: readonly LayerType[] | undefined;
  /** RoPE of `sliding_attention` layers when it differs from the global one (Gemma 3 `rope_local_base_freq`). */
  readonly localRope?: { readonly theta: number; readonly scaling: RopeScaling | null } | undefined;
  /** RMSNorm of each query and key head (weights `[headDim]`) after the projection, before RoPE (Qwen3, Gemma 3). */
  readonly qkNorm?: boolean | undefined;
  /** RMSNorms multiply by `offset + w`: 1 for Gemma (`(1 + w)`), else 0. */
  readonly normWeightOffset?: 0 | 1 | undefined;
  /**
   * Gemma 2/3 "sandwich" norms: `post_attention_layernorm` normalizes the attention output before the residual
   * add, and `pre_feedforward_layernorm` / `post_feedforward_layernorm` wrap the MLP.
   */
  readonly sandwichNorms?: boolean | undefined;
  /** Multiplier of the embedding output (Gemma: `sqrt(hidden_size)` rounded to the checkpoint dtype). */
  readonly embeddingScale?: number | undefined;
  /** Multiplier of `q . k` before the softmax. Default `1 / sqrt(headDim)`; Gemma: `query_pre_attn_scalar ** -0.5`. */
  readonly attentionScale?: number | undefined;
  /** `cap * tanh(score / cap)` on the scaled attention scores (Gemma 2 `attn_logit_softcapping`). */
  readonly attnLogitSoftcapping?: number | undefined;
  /** `cap * tanh(logit / cap)` on the final logits (Gemma 2 `final_logit_softcapping`). */
  readonly finalLogitSoftcapping?: number | undefined;
  /** Phi-3: q/k/v stored as one `qkv_proj` and gate/up as one `gate_up_proj` (split into row views at load). */
  readonly fusedProjections?: boolean | undefined;
  /** Prefix of every tensor name (`language_model.` for Gemma 3 multimodal checkpoints). Default `''`. */
  readonly tensorPrefix?: string | undefined;
}

type Json = Record<string, unknown>;

/** Round `x` to the checkpoint dtype as torch does when it builds a scalar tensor of that dtype (nearest even). */
function roundToDtype(x: number, dtype: 'float32' | 'float16' | 'bfloat16' | undefined): number {
  if (dtype === 'bfloat16') return bf16BitsToF32(f32ToBf16Bits(x));
  if (dtype === 'float16') return f16BitsToF32(f32ToF16Bits(x));
  return Math.fround(x);
}

function fail(file: string, field: string, message: string): EngineError {
  return new EngineError('INVALID_CONFIG', `${file}: ${field} ${message}`, { file, field });
}

function optionalPositive(j: Json, key: string, file: string): number | undefined {
  const v = j[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw fail(file, key, `should be a positive number or null, got ${describeValue(v)}`);
  return v;
}

function explicitLayerTypes(j: Json, numLayers: number, file: string): LayerType[] | undefined {
  const v = j.layer_types;
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length !== numLayers || !v.every((t) => t === 'full_attention' || t === 'sliding_attention')) {
    throw fail(file, 'layer_types', `should list full_attention / sliding_attention for each of the ${numLayers} layers, got ${describeValue(v)}`);
  }
  return v as LayerType[];
}

/** Inputs of {@link parseFamilyFields} already read by the common parser. */
export interface FamilyContext {
  readonly arch: Architecture;
  readonly numLayers: number;
  readonly hiddenSize: number;
  readonly headDim: number;
  readonly torchDtype: 'float32' | 'float16' | 'bfloat16' | undefined;
  /** The global RoPE scaling (Gemma 3 local layers never use it). */
  readonly parseRope: (value: unknown, field: string) => RopeScaling | null;
}

/**
 * Sliding window and per-layer attention types of a config:
 * - Mistral, Phi-3: `sliding_window` on every layer (null = none).
 * - Qwen2, Qwen3: only with `use_sliding_window: true`, on layers `i >= max_window_layers` (default 28) (or
 *   `layer_types`).
 * - Gemma 2: `layer_types`, default sliding on even layers (`(i + 1) % 2 != 0`); Gemma 3: default sliding unless
 *   `(i + 1) % sliding_window_pattern == 0` (pattern 6).
 * @throws EngineError `INVALID_CONFIG` naming the field.
 */
export function parseSlidingWindows(r: ConfigReader, arch: Architecture, numLayers: number): { slidingWindow: number | null; layerTypes?: LayerType[] } {
  const j = r.json;
  const file = r.file;
  const window = (): number | null => (j.sliding_window === undefined || j.sliding_window === null ? null : r.positiveInt('sliding_window'));
  switch (arch) {
    case 'MistralForCausalLM':
    case 'Phi3ForCausalLM':
      return { slidingWindow: window() };
    case 'Qwen2ForCausalLM':
    case 'Qwen3ForCausalLM': {
      if (j.use_sliding_window !== true) return { slidingWindow: null };
      const w = window();
      if (w === null) return { slidingWindow: null };
      const explicit = explicitLayerTypes(j, numLayers, file);
      if (explicit) return { slidingWindow: w, layerTypes: explicit };
      // transformers' Qwen2Config / Qwen3Config default max_window_layers is 28.
      const from = j.max_window_layers === undefined || j.max_window_layers === null ? 28 : j.max_window_layers;
      if (typeof from !== 'number' || !Number.isSafeInteger(from) || from < 0) throw fail(file, 'max_window_layers', `should be an integer >= 0, got ${describeValue(from)}`);
      return { slidingWindow: w, layerTypes: Array.from({ length: numLayers }, (_, i) => (i >= from ? 'sliding_attention' : 'full_attention')) };
    }
    case 'Gemma2ForCausalLM':
    case 'Gemma3ForCausalLM': {
      const w = j.sliding_window === undefined || j.sliding_window === null ? 4096 : r.positiveInt('sliding_window');
      const explicit = explicitLayerTypes(j, numLayers, file);
      if (explicit) return { slidingWindow: w, layerTypes: explicit };
      let pattern = 2;
      if (arch === 'Gemma3ForCausalLM') {
        const p = j.sliding_window_pattern ?? 6;
        if (typeof p !== 'number' || !Number.isSafeInteger(p) || p <= 0) throw fail(file, 'sliding_window_pattern', `should be a positive integer, got ${describeValue(p)}`);
        pattern = p;
      }
      return { slidingWindow: w, layerTypes: Array.from({ length: numLayers }, (_, i) => ((i + 1) % pattern !== 0 ? 'sliding_attention' : 'full_attention')) };
    }
    default:
      return { slidingWindow: null };
  }
}

/**
 * The {@link FamilyFields} of one architecture from its config.json object.
 * @throws EngineError `UNSUPPORTED_ARCHITECTURE` (options kvq does not run, named) / `INVALID_CONFIG`.
 */
export function parseFamilyFields(r: ConfigReader, ctx: FamilyContext): FamilyFields {
  const j = r.json;
  const file = r.file;
  switch (ctx.arch) {
    case 'Qwen3ForCausalLM':
      return { qkNorm: true };
    case 'Phi3ForCausalLM':
      return { fusedProjections: true };
    case 'Gemma2ForCausalLM':
    case 'Gemma3ForCausalLM': {
      if (j.use_bidirectional_attention === true) {
        throw new EngineError('UNSUPPORTED_ARCHITECTURE', `${file}: use_bidirectional_attention true is not supported (causal decoding only)`, {
          file,
          field: 'use_bidirectional_attention',
        });
      }
      const gemma2 = ctx.arch === 'Gemma2ForCausalLM';
      const scalar = optionalPositive(j, 'query_pre_attn_scalar', file) ?? 256;
      const attnCap = gemma2 && !('attn_logit_softcapping' in j) ? 50 : optionalPositive(j, 'attn_logit_softcapping', file);
      const finalCap = gemma2 && !('final_logit_softcapping' in j) ? 30 : optionalPositive(j, 'final_logit_softcapping', file);
      const fields: FamilyFields = {
        normWeightOffset: 1,
        sandwichNorms: true,
        qkNorm: !gemma2,
        embeddingScale: roundToDtype(Math.sqrt(ctx.hiddenSize), ctx.torchDtype),
        attentionScale: scalar ** -0.5,
        attnLogitSoftcapping: attnCap,
        finalLogitSoftcapping: finalCap,
      };
      if (gemma2) return fields;
      // Gemma 3: sliding layers use their own base and default RoPE; newer configs nest per-layer-type parameters.
      const params = j.rope_parameters;
      const local = typeof params === 'object' && params !== null ? (params as Json).sliding_attention : undefined;
      if (typeof local === 'object' && local !== null) {
        const theta = r.positiveNumber('rope_theta', 10000, local as Json, 'rope_parameters.sliding_attention.');
        return { ...fields, localRope: { theta, scaling: ctx.parseRope(local, 'rope_parameters.sliding_attention') } };
      }
      return { ...fields, localRope: { theta: r.positiveNumber('rope_local_base_freq', 10000), scaling: null } };
    }
    default:
      return {};
  }
}
