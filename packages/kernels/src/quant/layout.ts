/**
 * Storage layout facts of every {@link WeightDtype}: block sizes, bytes per block, the typed-array kind of `data`
 * and its exact length. The bit layouts inside the GGML blocks are documented (with their sources) in
 * docs/spec/quantized-weights.md and implemented by `./dequantize.ts`.
 * @see docs/spec/quantized-weights.md
 * @module
 */
import type { CompressedWeightDtype, DenseWeightDtype, GgmlWeightDtype, WeightDtype } from '../contract.js';

/** Geometry of one GGML block type. */
export interface GgmlBlockLayout {
  /** Weights per block (32 for `q8_0`..`q5_1`, 256 for the K-quants). */
  readonly blockElems: number;
  /** Bytes per block as stored in a GGUF file (ggml `type_size`). */
  readonly blockBytes: number;
}

/**
 * Block geometry of the GGML types (ggml `GGML_QUANT_SIZES` / `ggml_type_traits`):
 * - `q8_0`: 32 weights, 34 B = f16 `d` + 32 x int8.
 * - `q4_0`: 32 weights, 18 B = f16 `d` + 16 B of nibbles.
 * - `q4_1`: 32 weights, 20 B = f16 `d` + f16 `m` + 16 B of nibbles.
 * - `q5_0`: 32 weights, 22 B = f16 `d` + 4 B high bits + 16 B of nibbles.
 * - `q5_1`: 32 weights, 24 B = f16 `d` + f16 `m` + 4 B high bits + 16 B of nibbles.
 * - `q4_k`: 256 weights, 144 B = f16 `d` + f16 `dmin` + 12 B packed 6-bit scales/mins + 128 B of nibbles.
 * - `q5_k`: 256 weights, 176 B = f16 `d` + f16 `dmin` + 12 B scales/mins + 32 B high bits + 128 B of nibbles.
 * - `q6_k`: 256 weights, 210 B = 128 B low nibbles + 64 B high 2-bit pairs + 16 x int8 scales + f16 `d`.
 */
export const GGML_BLOCK: Readonly<Record<GgmlWeightDtype, GgmlBlockLayout>> = {
  q8_0: { blockElems: 32, blockBytes: 34 },
  q4_0: { blockElems: 32, blockBytes: 18 },
  q4_1: { blockElems: 32, blockBytes: 20 },
  q5_0: { blockElems: 32, blockBytes: 22 },
  q5_1: { blockElems: 32, blockBytes: 24 },
  q4_k: { blockElems: 256, blockBytes: 144 },
  q5_k: { blockElems: 256, blockBytes: 176 },
  q6_k: { blockElems: 256, blockBytes: 210 },
};

/** The dense dtypes, in contract order. */
export const DENSE_WEIGHT_DTYPES: readonly DenseWeightDtype[] = ['f32', 'bf16', 'f16'];
/** The GGML block dtypes, in contract order. */
export const GGML_WEIGHT_DTYPES: readonly GgmlWeightDtype[] = ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k'];
/** The compressed-tensors dtypes, in contract order. */
export const COMPRESSED_WEIGHT_DTYPES: readonly CompressedWeightDtype[] = ['fp8_e4m3', 'int8', 'int4'];
/** Every {@link WeightDtype}: dense, then GGML, then compressed-tensors. */
export const WEIGHT_DTYPES: readonly WeightDtype[] = [...DENSE_WEIGHT_DTYPES, ...GGML_WEIGHT_DTYPES, ...COMPRESSED_WEIGHT_DTYPES];
/** Every quantized dtype (GGML and compressed-tensors): the ones {@link quantizeMatrix} produces. */
export const QUANTIZED_WEIGHT_DTYPES: readonly (GgmlWeightDtype | CompressedWeightDtype)[] = [
  ...GGML_WEIGHT_DTYPES,
  ...COMPRESSED_WEIGHT_DTYPES,
];

/** True when `dtype` is one of the {@link WeightDtype} strings. */
export function isWeightDtype(dtype: unknown): dtype is WeightDtype {
  return typeof dtype === 'string' && (WEIGHT_DTYPES as readonly string[]).includes(dtype);
}

/** True for `f32`, `bf16`, `f16`. */
export function isDenseDtype(dtype: unknown): dtype is DenseWeightDtype {
  return dtype === 'f32' || dtype === 'bf16' || dtype === 'f16';
}

/** True for the GGML block types (`q8_0` .. `q6_k`). */
export function isGgmlDtype(dtype: unknown): dtype is GgmlWeightDtype {
  return typeof dtype === 'string' && Object.prototype.hasOwnProperty.call(GGML_BLOCK, dtype);
}

/** True for the compressed-tensors types (`fp8_e4m3`, `int8`, `int4`). */
export function isCompressedDtype(dtype: unknown): dtype is CompressedWeightDtype {
  return dtype === 'fp8_e4m3' || dtype === 'int8' || dtype === 'int4';
}

/** Typed-array kind `data` must have for a dtype. */
export type WeightArrayKind = 'Float32Array' | 'Uint16Array' | 'Uint8Array' | 'Int8Array';

/**
 * The typed-array kind of `data` for `dtype`: `Float32Array` (f32), `Uint16Array` (bf16/f16 bit patterns),
 * `Int8Array` (int8), `Uint8Array` (GGML blocks, fp8 codes, packed int4 nibbles).
 */
export function weightArrayKind(dtype: WeightDtype): WeightArrayKind {
  if (dtype === 'f32') return 'Float32Array';
  if (dtype === 'bf16' || dtype === 'f16') return 'Uint16Array';
  if (dtype === 'int8') return 'Int8Array';
  return 'Uint8Array';
}

/**
 * Columns a row must be a multiple of for `dtype`: the block size for GGML types, 2 for `int4` (two nibbles per
 * byte; the group size adds its own constraint), 1 otherwise.
 */
export function colsMultiple(dtype: WeightDtype): number {
  if (isGgmlDtype(dtype)) return GGML_BLOCK[dtype].blockElems;
  return dtype === 'int4' ? 2 : 1;
}

/**
 * Elements of `data` one row of `cols` weights occupies: `cols` (dense, fp8, int8), `cols / 2` bytes (int4), or
 * `cols / blockElems * blockBytes` bytes (GGML). `cols` must be a multiple of {@link colsMultiple} (not checked
 * here: `validateWeight` does).
 */
export function rowDataLength(dtype: WeightDtype, cols: number): number {
  if (isGgmlDtype(dtype)) {
    const b = GGML_BLOCK[dtype];
    return (cols / b.blockElems) * b.blockBytes;
  }
  return dtype === 'int4' ? cols / 2 : cols;
}

/**
 * Exact number of elements of `data` for a `[rows, cols]` matrix of `dtype` (bytes for the `Uint8Array` kinds).
 * E.g. `weightDataLength('q4_k', 2, 512) = 2 * 2 * 144 = 576`.
 */
export function weightDataLength(dtype: WeightDtype, rows: number, cols: number): number {
  return rows * rowDataLength(dtype, cols);
}

/**
 * Storage bits per weight, counting block headers (e.g. `q4_k` = 4.5, `q8_0` = 8.5) but not the separate
 * compressed-tensors scale arrays. For tables and memory estimates.
 */
export function bitsPerWeight(dtype: WeightDtype): number {
  if (isGgmlDtype(dtype)) return (GGML_BLOCK[dtype].blockBytes * 8) / GGML_BLOCK[dtype].blockElems;
  if (dtype === 'f32') return 32;
  if (dtype === 'bf16' || dtype === 'f16') return 16;
  return dtype === 'int4' ? 4 : 8;
}
