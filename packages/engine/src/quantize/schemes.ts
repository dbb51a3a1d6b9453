/**
 * The quantization schemes `kvq quantize` writes and, for the GGUF ones, which GGML type each tensor gets (llama.cpp's
 * `llama_tensor_get_type` rules for the file types named here, simplified as documented on {@link ggufTensorType}).
 * @see docs/spec/gguf-quantized-types.md
 * @module
 */
import { EngineError, describeValue } from '../errors.js';
import { GGML_BLOCKS, type GgmlWeightDtype } from '../tensor.js';

/** compressed-tensors schemes (llm-compressor presets): FP8 weights (FP8_DYNAMIC), int4 groups (W4A16), INT8 (W8A8). */
export type CompressedTensorsScheme = 'fp8' | 'w4a16' | 'w8a8';
/** GGUF file types (llama.cpp `llama_ftype` names, lower case). */
export type GgufScheme = 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q4_k_m' | 'q5_k_m' | 'q6_k';
/** Every scheme `kvq quantize` accepts. */
export type QuantizeScheme = CompressedTensorsScheme | GgufScheme;

/** Every {@link QuantizeScheme}, compressed-tensors first. */
export const QUANTIZE_SCHEMES: readonly QuantizeScheme[] = ['fp8', 'w4a16', 'w8a8', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k_m', 'q5_k_m', 'q6_k'];

/** Whether a scheme writes a compressed-tensors folder (else a GGUF file). */
export function isCompressedTensorsScheme(scheme: QuantizeScheme): scheme is CompressedTensorsScheme {
  return scheme === 'fp8' || scheme === 'w4a16' || scheme === 'w8a8';
}

/**
 * Validate a scheme name.
 * @throws EngineError `INVALID_ARGUMENT` naming the accepted schemes.
 */
export function parseQuantizeScheme(value: unknown): QuantizeScheme {
  if (typeof value === 'string' && (QUANTIZE_SCHEMES as readonly string[]).includes(value.toLowerCase())) return value.toLowerCase() as QuantizeScheme;
  throw new EngineError('INVALID_ARGUMENT', `quantization scheme ${describeValue(value)} is not one of ${QUANTIZE_SCHEMES.join(', ')}`, { field: 'scheme' });
}

/** llama.cpp's `use_more_bits(i_layer, n_layers)` (integer division as in C++). */
function useMoreBits(layer: number, layers: number): boolean {
  const eighth = Math.floor(layers / 8);
  return layer < eighth || layer >= Math.floor((7 * layers) / 8) || (layer - eighth) % 3 === 2;
}

/** The base GGML type of a file type (what most 2-D tensors get). */
function baseType(scheme: GgufScheme): GgmlWeightDtype {
  return scheme === 'q4_k_m' ? 'q4_k' : scheme === 'q5_k_m' ? 'q5_k' : scheme;
}

/** llama.cpp's fallback when a row is not a whole number of K-quant blocks (`convert_incompatible_tensor`). */
const FALLBACK: Partial<Record<GgmlWeightDtype, GgmlWeightDtype>> = { q4_k: 'q5_0', q5_k: 'q5_1', q6_k: 'q8_0' };

/**
 * The GGML type (or `'f16'` for llama.cpp's last-resort fallback) of one 2-D tensor of a Llama-family GGUF written
 * with file type `scheme`, following llama.cpp's `llama_tensor_get_type` for these file types (read from
 * src/llama-quant.cpp, 2026):
 * - `output.weight` (or `token_embd.weight` when the output is tied): Q6_K unless the scheme is Q8_0 (Q8_0 when the
 *   row is not a whole number of blocks of the base type);
 * - Q4_K_M / Q5_K_M: `attn_v.weight` and `ffn_down.weight` of layers where `use_more_bits(i, n)` holds get Q6_K;
 * - every other 2-D tensor (including `token_embd.weight`) gets the base type (Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, ...);
 * - a K-quant whose row is not a multiple of 256 falls back to Q5_0 (Q4_K), Q5_1 (Q5_K), Q8_0 (Q6_K), and to F16
 *   when even that does not divide.
 * Simplifications: no MoE / Falcon / 70B / importance-matrix branches (kvq writes dense Llama-family models only);
 * the `attn_v` counter is the layer index (llama.cpp counts `attn_v` tensors in file order, which is the same for
 * one `attn_v` per layer).
 * @param ggufName the GGUF tensor name (`blk.3.attn_v.weight`)
 * @param cols the row length (`ne0`)
 * @param numLayers block count
 * @param tiedOutput whether the model has no separate `output.weight`
 */
export function ggufTensorType(scheme: GgufScheme, ggufName: string, cols: number, numLayers: number, tiedOutput: boolean): GgmlWeightDtype | 'f16' {
  const base = baseType(scheme);
  let type: GgmlWeightDtype = base;
  const layer = Number(/^blk\.(\d+)\./.exec(ggufName)?.[1] ?? -1);
  if (ggufName === 'output.weight' || (tiedOutput && ggufName === 'token_embd.weight')) {
    if (cols % GGML_BLOCKS[base].elements !== 0) return 'q8_0';
    type = base === 'q8_0' ? 'q8_0' : 'q6_k';
  } else if ((scheme === 'q4_k_m' || scheme === 'q5_k_m') && /\.attn_v\.weight$/.test(ggufName) && useMoreBits(layer, numLayers)) {
    type = 'q6_k';
  } else if ((scheme === 'q4_k_m' || scheme === 'q5_k_m') && /\.ffn_down\.weight$/.test(ggufName) && useMoreBits(layer, numLayers)) {
    type = 'q6_k';
  }
  if (cols % GGML_BLOCKS[type].elements === 0) return type;
  const fallback = FALLBACK[type];
  return fallback !== undefined && cols % GGML_BLOCKS[fallback].elements === 0 ? fallback : 'f16';
}

/** llama.cpp `llama_ftype` id of a GGUF scheme (`general.file_type`): Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9, Q4_K_M 15, Q5_K_M 17, Q6_K 18. */
export const LLAMA_FTYPE: Readonly<Record<GgufScheme, number>> = { q4_0: 2, q4_1: 3, q8_0: 7, q5_0: 8, q5_1: 9, q4_k_m: 15, q5_k_m: 17, q6_k: 18 };
