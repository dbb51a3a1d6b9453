import type { WeightDtype, WeightMatrix } from '@kvq/kernels';

import { EngineError } from './errors.js';

export type { WeightMatrix };

/** compressed-tensors quantized weight types (the kernel contract's `CompressedWeightDtype`). */
export type CompressedWeightDtype = Extract<WeightDtype, 'fp8_e4m3' | 'int8' | 'int4'>;
/** GGML block types (the kernel contract's `GgmlWeightDtype`). */
export type GgmlWeightDtype = Exclude<WeightDtype, 'f32' | 'f16' | 'bf16' | CompressedWeightDtype>;

/** Dense element type of a tensor held in memory. 16-bit types keep their raw bits in a `Uint16Array`. */
export type WeightDType = 'f32' | 'f16' | 'bf16';

/**
 * Element type of any tensor the loaders produce: a dense {@link WeightDType}, a GGML block type (GGUF files) or a
 * compressed-tensors quantized type (the kernel contract's `WeightDtype`).
 */
export type TensorDType = WeightDtype;

/** Backing array of a dense {@link Tensor}: `Float32Array` for `f32`, raw IEEE binary16 / bfloat16 bits for `f16` / `bf16`. */
export type TensorData = Float32Array | Uint16Array;

/**
 * Backing array of any {@link Tensor}: {@link TensorData} for dense dtypes, `Uint8Array` of raw blocks (GGML types),
 * of e4m3fn codes (`fp8_e4m3`) or of packed nibbles (`int4`), `Int8Array` for `int8`.
 */
export type AnyTensorData = TensorData | Uint8Array | Int8Array;

/**
 * A row-major, little-endian tensor.
 * NOTE: dense dtypes: `data.length === shape.reduce(*)`, `data` is `Float32Array` iff `dtype === 'f32'`. Quantized
 * dtypes are 2-D only and their `data` holds exactly {@link quantizedByteLength} bytes (see the kernel contract's
 * `GgmlWeightDtype` / `CompressedWeightDtype` for the layouts); `shape` is the logical `[rows, cols]`.
 * 2-D weights are in Hugging Face orientation `[outFeatures, inFeatures]`.
 */
export interface Tensor {
  readonly dtype: TensorDType;
  readonly shape: readonly number[];
  readonly data: AnyTensorData;
  /** compressed-tensors dtypes: dequantization scales (float32; `[1]`, `[rows]` or `[rows, cols / groupSize]`). */
  readonly scale?: Float32Array | undefined;
  /** `int4` asymmetric: zero points `[rows, cols / groupSize]` in [-8, 7]. */
  readonly zeroPoint?: Int8Array | undefined;
  /** `int4`: columns per scale group. */
  readonly groupSize?: number | undefined;
  /**
   * compressed-tensors static activation scale (`input_scale`, `[1]` or `[rows]`), kept for inspection; applied only
   * through {@link Tensor.int8Activations} (FP8 and int4 weights run float32 activations: W8A16 / W4A16).
   */
  readonly inputScale?: Float32Array | undefined;
  /**
   * `int8` weights of a W8A8 checkpoint: the activations are quantized to int8 before the product (the kernels'
   * `activations: 'q8'`): per token when `staticScale` is absent, else with that static scale. Absent: float32.
   */
  readonly int8Activations?: { readonly staticScale?: number } | undefined;
}

/** GGML block geometry: elements per block and bytes per block (ggml `type_traits`, gguf-py `GGML_QUANT_SIZES`). */
export const GGML_BLOCKS: Readonly<Record<GgmlWeightDtype, { readonly elements: number; readonly bytes: number }>> = {
  q8_0: { elements: 32, bytes: 34 },
  q4_0: { elements: 32, bytes: 18 },
  q4_1: { elements: 32, bytes: 20 },
  q5_0: { elements: 32, bytes: 22 },
  q5_1: { elements: 32, bytes: 24 },
  q4_k: { elements: 256, bytes: 144 },
  q5_k: { elements: 256, bytes: 176 },
  q6_k: { elements: 256, bytes: 210 },
};

/** Whether a dtype is one of the GGML block types. */
export function isGgmlDType(dtype: TensorDType): dtype is GgmlWeightDtype {
  return dtype in GGML_BLOCKS;
}

/** Whether a dtype is one of the compressed-tensors quantized types. */
export function isCompressedDType(dtype: TensorDType): dtype is CompressedWeightDtype {
  return dtype === 'fp8_e4m3' || dtype === 'int8' || dtype === 'int4';
}

/** Whether a dtype is dense (`f32`, `f16`, `bf16`). */
export function isDenseDType(dtype: TensorDType): dtype is WeightDType {
  return dtype === 'f32' || dtype === 'f16' || dtype === 'bf16';
}

/**
 * Bytes of one stored row of a `[rows, cols]` quantized matrix (`cols` must be a whole number of blocks / even for
 * `int4`; the caller checks).
 */
export function quantizedRowBytes(dtype: GgmlWeightDtype | CompressedWeightDtype, cols: number): number {
  if (isGgmlDType(dtype)) return (cols / GGML_BLOCKS[dtype].elements) * GGML_BLOCKS[dtype].bytes;
  return dtype === 'int4' ? cols / 2 : cols;
}

/** Bytes of a whole `[rows, cols]` quantized matrix (`rows * quantizedRowBytes`). */
export function quantizedByteLength(dtype: GgmlWeightDtype | CompressedWeightDtype, rows: number, cols: number): number {
  return rows * quantizedRowBytes(dtype, cols);
}

/** Bytes per element of a dense {@link WeightDType}. */
export function dtypeBytes(dtype: WeightDType): 2 | 4 {
  return dtype === 'f32' ? 4 : 2;
}

/** Number of elements of a shape (1 for a scalar `[]`). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}


/**
 * The kernel contract's {@link WeightMatrix} view of a 2-D tensor (no copy: shares `data`, `scale`, `zeroPoint`):
 * `rows` = output features, `cols` = input features.
 * @throws EngineError `INVALID_ARGUMENT` when the tensor is not 2-D.
 */
export function asWeightMatrix(tensor: Tensor, name = 'tensor'): WeightMatrix {
  if (tensor.shape.length !== 2) {
    throw new EngineError('INVALID_ARGUMENT', `${name}: a weight matrix must be 2-D, got shape [${tensor.shape.join(', ')}]`, {
      field: name,
    });
  }
  const [rows, cols] = tensor.shape as [number, number];
  const w: WeightMatrix = {
    dtype: tensor.dtype,
    data: tensor.data,
    rows,
    cols,
    ...(tensor.scale ? { scale: tensor.scale } : {}),
    ...(tensor.zeroPoint ? { zeroPoint: tensor.zeroPoint } : {}),
    ...(tensor.groupSize !== undefined ? { groupSize: tensor.groupSize } : {}),
  };
  if (tensor.int8Activations && tensor.dtype === 'int8') int8ActivationsOfWeight.set(w, tensor.int8Activations);
  return w;
}

/** The W8A8 activation quantization of the weight matrices {@link asWeightMatrix} made from such tensors. */
const int8ActivationsOfWeight = new WeakMap<WeightMatrix, NonNullable<Tensor['int8Activations']>>();

/**
 * How a weight matrix made by {@link asWeightMatrix} takes its activations: `{}` (dynamic per-token int8) or
 * `{ staticScale }` for the `int8` weights of a W8A8 checkpoint; `undefined`: float32.
 */
export function int8ActivationsOf(w: WeightMatrix): Tensor['int8Activations'] {
  return int8ActivationsOfWeight.get(w);
}

/** Gives `w` (a matrix built from such weights, e.g. their stacked rows) the activation rule `a` (see {@link int8ActivationsOf}). */
export function setInt8Activations(w: WeightMatrix, a: Tensor['int8Activations']): void {
  if (a) int8ActivationsOfWeight.set(w, a);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Decode bfloat16 bits to a number (exact). */
export function bf16ToNumber(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

/** Decode IEEE binary16 bits to a number (exact). */
export function f16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

/**
 * The tensor's values as float32. For `f32` tensors this returns `tensor.data` itself (no copy — do not mutate
 * it unless you own the tensor); 16-bit tensors are decoded into a new array.
 * @throws EngineError `UNSUPPORTED_DTYPE` for quantized tensors (kernels compute on them in their stored form;
 *   there is deliberately no full float copy of a quantized matrix in the engine).
 */
export function tensorToFloat32(tensor: Tensor): Float32Array {
  if (tensor.dtype === 'f32') return tensor.data as Float32Array;
  if (!isDenseDType(tensor.dtype)) {
    throw new EngineError('UNSUPPORTED_DTYPE', `a ${tensor.dtype} tensor of shape [${tensor.shape.join(', ')}] has no float32 view (quantized weights stay in their stored form)`, {
      field: tensor.dtype,
    });
  }
  const src = tensor.data as Uint16Array;
  const out = new Float32Array(src.length);
  if (tensor.dtype === 'bf16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  } else {
    for (let i = 0; i < src.length; i++) out[i] = f16ToNumber(src[i]!);
  }
  return out;
}

/**
 * Reorder the rows of a Q or K projection weight (or bias) between the two RoPE layouts.
 *
 * Within each head of `headDim = rows / numHeads` rows, the interleaved layout (llama2.c, GGUF `llama`, Meta's
 * original checkpoints) pairs rows (2j, 2j+1); the Hugging Face rotate-half layout pairs rows (j, j + headDim/2).
 * `direction: 'toRotateHalf'` maps interleaved row `2j + i` to rotate-half row `i * headDim/2 + j` (i ∈ {0,1});
 * `'toInterleaved'` is its inverse (what llama.cpp's converter applies to HF weights).
 *
 * Returns a new array of the same type; `data.length` must be `rows * cols`. Quantized (block) data moves as whole
 * rows: pass the stored row length (`quantizedRowBytes`) as `cols` and the `Uint8Array` / `Int8Array` as `data`.
 * @throws EngineError `SHAPE_MISMATCH` when rows is not divisible by numHeads or the head dimension is odd.
 */
export function permuteRotaryRows<T extends AnyTensorData>(
  data: T,
  rows: number,
  cols: number,
  numHeads: number,
  direction: 'toRotateHalf' | 'toInterleaved',
  name = 'tensor',
): T {
  const headDim = rows / numHeads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0 || data.length !== rows * cols) {
    throw new EngineError(
      'SHAPE_MISMATCH',
      `${name}: cannot permute ${rows} rows x ${cols} columns (${data.length} elements) as ${numHeads} heads with an even head dimension`,
      { field: name },
    );
  }
  const half = headDim / 2;
  const out = new (data.constructor as new (n: number) => T)(data.length);
  for (let h = 0; h < numHeads; h++) {
    const base = h * headDim;
    for (let j = 0; j < half; j++) {
      for (let i = 0; i < 2; i++) {
        const interleavedRow = base + 2 * j + i;
        const halfRow = base + i * half + j;
        const [src, dst] = direction === 'toRotateHalf' ? [interleavedRow, halfRow] : [halfRow, interleavedRow];
        out.set(data.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}
