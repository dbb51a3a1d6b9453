/**
 * Quantized weights: layout facts, row dequantization (the reference semantics) and quantizers.
 * @see docs/spec/quantized-weights.md
 * @module
 */
export {
  bitsPerWeight,
  colsMultiple,
  COMPRESSED_WEIGHT_DTYPES,
  DENSE_WEIGHT_DTYPES,
  GGML_BLOCK,
  GGML_WEIGHT_DTYPES,
  isCompressedDtype,
  isDenseDtype,
  isGgmlDtype,
  isWeightDtype,
  QUANTIZED_WEIGHT_DTYPES,
  rowDataLength,
  WEIGHT_DTYPES,
  weightArrayKind,
  weightDataLength,
  type GgmlBlockLayout,
  type WeightArrayKind,
} from './layout.js';
export {
  ACTIVATION_BLOCK_Q16,
  activationBlockQ8,
  quantizeActivationBlockQ16,
  quantizeActivationBlockQ8,
  quantizeActivationRowInt8,
  roundTripActivationsInt8,
  roundTripActivationsQ16,
  roundTripActivationsQ8,
} from './activations.js';
export { dequantizeRow, kScaleMin } from './dequantize.js';
export { joinWeightRows, stackWeightRows } from './stack.js';
export { quantizeMatrix, type QuantizeOptions } from './quantize.js';
export type { ScaleGranularity } from './quantize-compressed.js';
