import type { ObserverKind } from '../observers.js';
import type { ScaleStrategy } from '../scales.js';

/**
 * Checkpoint layouts kvq writes and reads (spec §3.4–§4):
 * - `compressed-tensors`: llm-compressor's format, `model.layers.N.self_attn.{k,v,q}_scale` (shape `[1]` or
 *   `[H,1,1]`) plus `quantization_config.kv_cache_scheme`. vLLM serves it with `kv_cache_dtype` fp8 unchanged.
 * - `modelopt`: NVIDIA ModelOpt names `self_attn.k_proj.k_scale` / `v_proj.v_scale` (scalars, per tensor) and
 *   `kv_cache_quant_algo: "FP8"` (config.json and `hf_quant_config.json`). vLLM's ModelOpt loader also needs
 *   ModelOpt-quantized weights (`quant_algo` FP8/NVFP4); use it to add scales to such checkpoints.
 * - `quark`: AMD Quark names `self_attn.{k,v,q}_proj.output_scale` (scalars) with a `kv_cache_group` config.
 * - `vllm-json`: vLLM's removed `--quantization-param-path` file `kv_cache_scales.json` (one float per layer for
 *   both K and V, TP rank 0, `float8_e4m3fn`); the weights and config are left as they are.
 */
export type CheckpointFlavor = 'compressed-tensors' | 'modelopt' | 'quark' | 'vllm-json';

/** Every {@link CheckpointFlavor}, default first. */
export const CHECKPOINT_FLAVORS: readonly CheckpointFlavor[] = Object.freeze(['compressed-tensors', 'modelopt', 'quark', 'vllm-json']);

/** Name of vLLM's legacy scale file. */
export const VLLM_SCALES_JSON = 'kv_cache_scales.json';

/** Name of kvq's provenance + report file written beside the scales. */
export const CALIBRATION_JSON = 'kvq_calibration.json';

/** The checkpoint tensor name of a layer's scale in a flavor (`undefined` where the flavor has no such name). */
export function scaleTensorName(flavor: CheckpointFlavor, layer: number, slot: 'k' | 'v' | 'q'): string | undefined {
  const p = `model.layers.${layer}.self_attn.`;
  switch (flavor) {
    case 'compressed-tensors':
      return `${p}${slot}_scale`;
    case 'modelopt':
      return slot === 'q' ? undefined : `${p}${slot}_proj.${slot}_scale`;
    case 'quark':
      return `${p}${slot}_proj.output_scale`;
    case 'vllm-json':
      return undefined;
  }
}

/**
 * compressed-tensors `QuantizationArgs` of an FP8 KV cache (and of attention `input_activations`), every
 * serialized field present, as llm-compressor writes them (spec §4.1).
 */
export function compressedTensorsFp8Args(strategy: ScaleStrategy, observer: ObserverKind | string): Record<string, unknown> {
  return {
    num_bits: 8,
    type: 'float',
    symmetric: true,
    group_size: null,
    strategy,
    block_structure: null,
    dynamic: false,
    actorder: null,
    scale_dtype: null,
    zp_dtype: null,
    observer,
    observer_kwargs: {},
  };
}

/** The attention module class llm-compressor targets for q (`LlamaForCausalLM` → `LlamaAttention`). */
export function attentionClassOf(architecture: string): string {
  return architecture.replace(/For(CausalLM|ConditionalGeneration)$/, '') + 'Attention';
}

/**
 * `quantization_config` for a compressed-tensors KV-cache checkpoint. With q scales, an `attention` config group
 * targets the attention class with the same args as `input_activations` (llm-compressor's attention quantization;
 * "attention quantization also implicitly applies kv cache quantization with the same quantization arguments").
 * An existing compressed-tensors config (quantized weights) is kept and extended.
 */
export function compressedTensorsQuantizationConfig(options: {
  strategy: ScaleStrategy;
  observer: ObserverKind | string;
  withQuery: boolean;
  architecture: string;
  existing?: Record<string, unknown> | undefined;
}): Record<string, unknown> {
  const args = compressedTensorsFp8Args(options.strategy, options.observer);
  const existing = options.existing;
  const groups: Record<string, unknown> = { ...((existing?.config_groups as Record<string, unknown> | undefined) ?? {}) };
  if (options.withQuery) {
    groups.attention = {
      targets: [attentionClassOf(options.architecture)],
      weights: null,
      input_activations: args,
      output_activations: null,
      format: 'dense',
    };
  } else {
    delete groups.attention;
  }
  return {
    quant_method: 'compressed-tensors',
    format: existing?.format ?? 'dense',
    quantization_status: 'compressed',
    global_compression_ratio: existing?.global_compression_ratio ?? null,
    config_groups: groups,
    kv_cache_scheme: args,
    ignore: existing?.ignore ?? [],
    ...(existing?.sparsity_config !== undefined ? { sparsity_config: existing.sparsity_config } : {}),
    ...(existing?.transform_config !== undefined ? { transform_config: existing.transform_config } : {}),
    ...(existing?.version !== undefined ? { version: existing.version } : {}),
  };
}

/** `quantization_config` (and `hf_quant_config.json`) of a ModelOpt FP8 KV-cache checkpoint. */
export function modelOptQuantizationConfig(existing: Record<string, unknown> | undefined, version: string): {
  config: Record<string, unknown>;
  hfQuantConfig: Record<string, unknown>;
} {
  const quantAlgo = (existing?.quant_algo as string | null | undefined) ?? null;
  const exclude = (existing?.exclude_modules as unknown[] | undefined) ?? (existing?.ignore as unknown[] | undefined) ?? [];
  return {
    config: { ...(existing ?? {}), quant_method: 'modelopt', quant_algo: quantAlgo, kv_cache_quant_algo: 'FP8' },
    hfQuantConfig: { producer: { name: 'kvq', version }, quantization: { quant_algo: quantAlgo, kv_cache_quant_algo: 'FP8', exclude_modules: exclude } },
  };
}

/** `quantization_config` of a Quark checkpoint whose k/v (and q) projections carry FP8 per-tensor output scales. */
export function quarkQuantizationConfig(withQuery: boolean): Record<string, unknown> {
  const fp8Out = { dtype: 'fp8_e4m3', qscheme: 'per_tensor', is_dynamic: false, symmetric: true, ch_axis: null, group_size: null, round_method: null, scale_type: null, observer_cls: 'PerTensorMinMaxObserver' };
  const layer = { input_tensors: null, weight: null, bias: null, output_tensors: fp8Out, target_device: null };
  const kvGroup = ['*k_proj', '*v_proj', ...(withQuery ? ['*q_proj'] : [])];
  return {
    quant_method: 'quark',
    export: { kv_cache_group: ['*k_proj', '*v_proj'], pack_method: 'reorder', weight_format: 'real_quantized' },
    global_quant_config: { input_tensors: null, weight: null, bias: null, output_tensors: null, target_device: null },
    layer_quant_config: Object.fromEntries(kvGroup.map((p) => [p, layer])),
    layer_type_quant_config: {},
    exclude: [],
  };
}
