/**
 * Write a dense model as a compressed-tensors checkpoint folder, in the layout llm-compressor writes for its FP8_DYNAMIC,
 * W4A16 and W8A8 (INT8) presets: `config.json` with a `quantization_config` (`quant_method: compressed-tensors`, one
 * `config_groups.group_0` targeting `Linear`, `ignore: ["lm_head"]`), and `model.safetensors` holding, per quantized
 * Linear `m`, `m.weight` + `m.weight_scale` (FP8 / INT8) or `m.weight_packed` + `m.weight_shape` + `m.weight_scale`
 * (int4), everything else (embeddings, norms, `lm_head`) in its stored dtype.
 * @see docs/spec/compressed-tensors.md
 * @module
 */
import { quantizeMatrix } from '@kvq/kernels';

import { EngineError } from '../errors.js';
import type { SafetensorsWritable } from '../formats/safetensors.js';
import type { LoadedModel } from '../load/types.js';
import { isDenseDType, tensorToFloat32 } from '../tensor.js';
import { weightsByHfName } from '../weights/model-weights.js';
import type { CompressedTensorsScheme } from './schemes.js';

/** Options of {@link compressedTensorsCheckpoint}. */
export interface CompressedTensorsWriteOptions {
  /** `w4a16`: columns per group. Default 128, halved (64, 32, ...) until it divides every quantized Linear's inputs. */
  readonly groupSize?: number | undefined;
}

/** A checkpoint in memory, ready to write: tensors by name and the `quantization_config` object. */
export interface CompressedTensorsCheckpoint {
  readonly tensors: Map<string, SafetensorsWritable>;
  readonly quantizationConfig: Record<string, unknown>;
  /** The int4 group size used (`w4a16` only). */
  readonly groupSize: number | undefined;
}

const argsBase = { actorder: null, block_structure: null, group_size: null, observer: null, observer_kwargs: {}, scale_dtype: null, zp_dtype: null };

/** The `config_groups.group_0` scheme llm-compressor's preset writes. */
function schemeJson(scheme: CompressedTensorsScheme, groupSize: number | undefined): Record<string, unknown> {
  const tokenActs = (type: 'int' | 'float'): Record<string, unknown> => ({ ...argsBase, dynamic: true, num_bits: 8, strategy: 'token', symmetric: true, type });
  if (scheme === 'fp8') {
    return {
      format: 'float-quantized',
      input_activations: tokenActs('float'),
      output_activations: null,
      targets: ['Linear'],
      weights: { ...argsBase, dynamic: false, num_bits: 8, observer: 'minmax', strategy: 'channel', symmetric: true, type: 'float' },
    };
  }
  if (scheme === 'w8a8') {
    return {
      format: 'int-quantized',
      input_activations: tokenActs('int'),
      output_activations: null,
      targets: ['Linear'],
      weights: { ...argsBase, dynamic: false, num_bits: 8, observer: 'minmax', strategy: 'channel', symmetric: true, type: 'int' },
    };
  }
  return {
    format: 'pack-quantized',
    input_activations: null,
    output_activations: null,
    targets: ['Linear'],
    weights: { ...argsBase, dynamic: false, group_size: groupSize, num_bits: 4, observer: 'minmax', strategy: 'group', symmetric: true, type: 'int' },
  };
}

/** Whether an HF tensor name is a decoder Linear weight `kvq quantize` quantizes (`lm_head` is ignored, as llm-compressor's presets do). */
function isQuantizedLinear(name: string): boolean {
  return /^model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight$/.test(name);
}

/**
 * Quantize a dense model's decoder Linear weights (`@kvq/kernels` `quantizeMatrix`: compressed-tensors' min-max
 * observer, scales in float32) into compressed-tensors tensors.
 * NOTE: scales are stored as F32 (llm-compressor stores them in the model's dtype, usually BF16); the loader reads both.
 * @throws EngineError `INVALID_ARGUMENT` for quantized source weights or a group size that divides no Linear.
 */
export function compressedTensorsCheckpoint(model: LoadedModel, scheme: CompressedTensorsScheme, options: CompressedTensorsWriteOptions = {}): CompressedTensorsCheckpoint {
  const weights = weightsByHfName(model.config, model.weights);
  let groupSize: number | undefined;
  if (scheme === 'w4a16') {
    const colsList = [...weights].filter(([n]) => isQuantizedLinear(n)).map(([, t]) => t.shape[1]!);
    groupSize = options.groupSize ?? 128;
    if (options.groupSize === undefined) while (groupSize > 1 && colsList.some((c) => c % groupSize! !== 0)) groupSize /= 2;
    const bad = colsList.find((c) => c % groupSize! !== 0);
    if (!Number.isInteger(groupSize) || groupSize < 1 || bad !== undefined) {
      throw new EngineError('INVALID_ARGUMENT', `w4a16 group size ${groupSize} does not divide a Linear with ${bad} input columns`, { field: 'groupSize' });
    }
  }
  const tensors = new Map<string, SafetensorsWritable>();
  for (const [name, t] of weights) {
    if (!isDenseDType(t.dtype)) {
      throw new EngineError('INVALID_ARGUMENT', `${model.path}: tensor ${name} is already ${t.dtype}; quantize from a dense (f32/f16/bf16) model`, { file: model.path, field: name });
    }
    if (!isQuantizedLinear(name)) {
      tensors.set(name, t);
      continue;
    }
    const m = name.slice(0, -'.weight'.length);
    const [rows, cols] = t.shape as [number, number];
    const values = tensorToFloat32(t);
    if (scheme === 'fp8' || scheme === 'w8a8') {
      const q = quantizeMatrix(values, rows, cols, scheme === 'fp8' ? 'fp8_e4m3' : 'int8', { granularity: 'channel' });
      tensors.set(`${m}.weight`, { safetensorsDtype: scheme === 'fp8' ? 'F8_E4M3' : 'I8', shape: [rows, cols], data: q.data });
      tensors.set(`${m}.weight_scale`, { safetensorsDtype: 'F32', shape: [rows, 1], data: q.scale! });
    } else {
      if (cols % 8 !== 0) throw new EngineError('INVALID_ARGUMENT', `${name}: ${cols} input columns do not fill whole int32 words of 8 int4 values`, { field: name });
      const q = quantizeMatrix(values, rows, cols, 'int4', { groupSize, symmetric: true });
      // The contract's nibble bytes ARE the little-endian int32 words of compressed-tensors' pack_to_int32.
      tensors.set(`${m}.weight_packed`, { safetensorsDtype: 'I32', shape: [rows, cols / 8], data: q.data });
      tensors.set(`${m}.weight_shape`, { safetensorsDtype: 'I64', shape: [2], data: new BigInt64Array([BigInt(rows), BigInt(cols)]) });
      tensors.set(`${m}.weight_scale`, { safetensorsDtype: 'F32', shape: [rows, cols / groupSize!], data: q.scale! });
    }
  }
  const group = schemeJson(scheme, groupSize);
  const quantizationConfig: Record<string, unknown> = {
    config_groups: { group_0: group },
    format: group.format,
    global_compression_ratio: null,
    ignore: ['lm_head'],
    kv_cache_scheme: null,
    quant_method: 'compressed-tensors',
    quantization_status: 'compressed',
  };
  return { tensors, quantizationConfig, groupSize };
}
