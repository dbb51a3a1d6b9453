import { EngineError } from './errors.js';

/** Element type of a weight tensor held in memory. 16-bit types keep their raw bits in a `Uint16Array`. */
export type WeightDType = 'f32' | 'f16' | 'bf16';

/** Backing array of a {@link Tensor}: `Float32Array` for `f32`, raw IEEE binary16 / bfloat16 bits for `f16` / `bf16`. */
export type TensorData = Float32Array | Uint16Array;

/**
 * A dense, row-major, little-endian tensor.
 * NOTE: `data.length === shape.reduce(*)`; `data` is `Float32Array` iff `dtype === 'f32'`.
 * 2-D weights are in Hugging Face orientation `[outFeatures, inFeatures]`.
 */
export interface Tensor {
  readonly dtype: WeightDType;
  readonly shape: readonly number[];
  readonly data: TensorData;
}

/**
 * The view of a 2-D weight the kernel contract consumes: `rows` = output features, `cols` = input features,
 * element (r, c) at `data[r * cols + c]`. Shares `data` with the tensor it came from (no copy).
 */
export interface WeightMatrix {
  readonly dtype: WeightDType;
  readonly data: TensorData;
  readonly rows: number;
  readonly cols: number;
}

/** Bytes per element of a {@link WeightDType}. */
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
 * The {@link WeightMatrix} view of a 2-D tensor (no copy).
 * @throws EngineError `INVALID_ARGUMENT` when the tensor is not 2-D.
 */
export function asWeightMatrix(tensor: Tensor, name = 'tensor'): WeightMatrix {
  if (tensor.shape.length !== 2) {
    throw new EngineError('INVALID_ARGUMENT', `${name}: a weight matrix must be 2-D, got shape [${tensor.shape.join(', ')}]`, {
      field: name,
    });
  }
  const [rows, cols] = tensor.shape as [number, number];
  return { dtype: tensor.dtype, data: tensor.data, rows, cols };
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
 */
export function tensorToFloat32(tensor: Tensor): Float32Array {
  if (tensor.dtype === 'f32') return tensor.data as Float32Array;
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
 * Returns a new array of the same type; `data.length` must be `rows * cols`.
 * @throws EngineError `SHAPE_MISMATCH` when rows is not divisible by numHeads or the head dimension is odd.
 */
export function permuteRotaryRows<T extends TensorData>(
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
