/**
 * @kvq/fp8: a bit-exact FP8 codec (e4m3fn, e5m2, e4m3fnuz, e5m2fnuz) and the scaled quantization a KV cache
 * needs. Pure TypeScript, zero dependencies.
 * @see ../README.md
 */
export { Fp8Error, type Fp8ErrorCode } from './errors.js';
export {
  FP8_FORMATS,
  FP8_FORMAT_NAMES,
  formatInfo,
  type Fp8Format,
  type Fp8FormatInfo,
  type Saturation,
} from './formats.js';
export {
  decodeFp8,
  decodeFp8Array,
  decodeFp8ToBf16Bits,
  decodeFp8ToF16Bits,
  encodeFp8,
  encodeFp8Array,
  encodeFp8BitRange,
  encodeFp8FromBf16Bits,
  encodeFp8FromF16Bits,
  fp8DecodeTable,
  type DecodeOptions,
  type EncodeOptions,
} from './codec.js';
export { dequantizeScaled, PER_TENSOR, quantizeScaled, validateScales, type ScaleLayout } from './scaled.js';
export {
  amaxPerHead,
  amaxTensor,
  MIN_SCALE,
  scaleFromAmax,
  scalesFromAmax,
  type ScaleFromAmaxOptions,
} from './scales.js';
export { setFp8Simd } from './wasm/simd.js';
export { errorStats, roundTripStats, type QuantizationErrorStats, type RoundTripOptions } from './stats.js';
export { bf16BitsToF32, f16BitsToF32, f16ToF32Table, f32Bits, f32FromBits, f32ToBf16Bits, f32ToF16Bits } from './half.js';
