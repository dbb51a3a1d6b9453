import type { Fp8Format } from '@kvq/fp8';
import { CacheError, checkInt, describe } from './errors.js';
import { isKvQuantDtype, KV_QUANT_DTYPES, type KvQuantDtype } from './kv-quant.js';

/**
 * Element type stored in a KV pool.
 * - `'f32'`: Float32Array, 4 bytes per element.
 * - `'bf16'` / `'f16'`: raw 16-bit patterns in a Uint16Array (2 bytes), rounded to nearest even on write.
 * - an FP8 format (`'e4m3fn'`, `'e5m2'`, `'e4m3fnuz'`, `'e5m2fnuz'`): codes in a Uint8Array (1 byte), scaled.
 * - a {@link KvQuantDtype} (`'fp8_per_token_head'`, `'int8_per_token_head'`, `'int4_per_token_head'`,
 *   `'int4_g16'`/`'int4_g32'`/`'int4_g64'`, `'nvfp4'`, `'q4_0'`, `'int4_g32_f16'`): a Uint8Array of blocks holding codes and the scales
 *   computed at write time (layout: `kvBlockLayout`, docs/spec/kv-dtypes.md).
 */
export type KvStorageDtype = 'f32' | 'bf16' | 'f16' | Fp8Format | KvQuantDtype;

/** Backing array of a KV pool: Float32Array for `'f32'`, Uint16Array for `'bf16'`/`'f16'`, Uint8Array for FP8 and the quantized dtypes. */
export type KvPoolArray = Float32Array | Uint16Array | Uint8Array;

/** FP8 formats accepted as storage dtypes (kept here so this module needs only the type from `@kvq/fp8`). */
const FP8_DTYPES: readonly Fp8Format[] = ['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'];

/** Every storage dtype, in a stable order. */
export const KV_STORAGE_DTYPES: readonly KvStorageDtype[] = ['f32', 'bf16', 'f16', ...FP8_DTYPES, ...KV_QUANT_DTYPES];

/** True when `dtype` is one of the FP8 formats (stored as 1-byte codes, scaled). */
export function isFp8Dtype(dtype: KvStorageDtype): dtype is Fp8Format {
  return (FP8_DTYPES as readonly string[]).includes(dtype);
}

/** Throw `UNSUPPORTED_DTYPE` unless `dtype` is a {@link KvStorageDtype}. */
export function assertKvStorageDtype(dtype: unknown, name = 'dtype'): asserts dtype is KvStorageDtype {
  if (typeof dtype !== 'string' || !(KV_STORAGE_DTYPES as readonly string[]).includes(dtype)) {
    throw new CacheError(
      'UNSUPPORTED_DTYPE',
      `${name} must be one of ${KV_STORAGE_DTYPES.join(', ')}, got ${describe(dtype)}`,
    );
  }
}

/**
 * Bytes per element of the pool array: 4 for `'f32'`, 2 for `'bf16'`/`'f16'`, 1 for FP8 formats and for the
 * quantized dtypes (whose pools are byte arrays; their bytes per token come from `kvBlockLayout`).
 */
export function bytesPerElement(dtype: KvStorageDtype): number {
  assertKvStorageDtype(dtype);
  if (dtype === 'f32') return 4;
  if (dtype === 'bf16' || dtype === 'f16') return 2;
  return 1;
}

/**
 * Allocate a zero-filled pool array of `length` elements for `dtype`
 * (Float32Array / Uint16Array / Uint8Array, see {@link KvPoolArray}).
 * Zero decodes to +0 in every supported dtype.
 * @throws CacheError `UNSUPPORTED_DTYPE`, or `INVALID_ARGUMENT` for a negative or non-integer length.
 */
export function kvArrayFor(dtype: KvStorageDtype, length: number): KvPoolArray {
  assertKvStorageDtype(dtype);
  checkInt('length', length, 0);
  if (dtype === 'f32') return new Float32Array(length);
  if (dtype === 'bf16' || dtype === 'f16') return new Uint16Array(length);
  return new Uint8Array(length);
}

/** Model (activation) dtypes that `'auto'` can resolve to. */
export type ModelDtype = 'f32' | 'bf16' | 'f16';

/**
 * vLLM-style `kv_cache_dtype` strings (plus our storage dtype names, accepted as-is):
 * `'auto'` (the model dtype), `'fp8'` / `'fp8_e4m3'` (E4M3), `'fp8_e5m2'`, `'bfloat16'`, `'float16'`, `'float32'`,
 * and the write-time-scaled dtypes under their own names (`'int8_per_token_head'`, `'nvfp4'`, ...).
 */
export type KvCacheDtypeOption =
  | 'auto'
  | 'fp8'
  | 'fp8_e4m3'
  | 'fp8_e5m2'
  | 'bfloat16'
  | 'float16'
  | 'float32'
  | KvStorageDtype;

/**
 * Resolve a `kv_cache_dtype` option to a storage dtype.
 * `'auto'` → `modelDtype`; `'fp8'` ≡ `'fp8_e4m3'` → `'e4m3fn'`, or `'e4m3fnuz'` when `fnuz` is set
 * (ROCm gfx94x, where vLLM's FP8 is `float8_e4m3fnuz`); `'fp8_e5m2'` → `'e5m2'` (`'e5m2fnuz'` with `fnuz`).
 * @see docs/spec/vllm-fp8-kv-cache.md §1.1–1.4
 * The write-time-scaled dtypes resolve to themselves; `fp8_per_token_head` uses e4m3fn, so with `fnuz` it is
 * `UNSUPPORTED_DTYPE` (no e4m3fnuz variant yet).
 * @throws CacheError `UNSUPPORTED_DTYPE` for any other string.
 */
export function resolveKvCacheDtype(
  option: KvCacheDtypeOption,
  modelDtype: ModelDtype = 'bf16',
  opts: { fnuz?: boolean } = {},
): KvStorageDtype {
  const fnuz = opts.fnuz === true;
  switch (option) {
    case 'auto':
      assertKvStorageDtype(modelDtype, 'modelDtype');
      if (isFp8Dtype(modelDtype) || isKvQuantDtype(modelDtype)) {
        throw new CacheError('UNSUPPORTED_DTYPE', `modelDtype must be f32, bf16 or f16, got ${describe(modelDtype)}`);
      }
      return modelDtype;
    case 'fp8':
    case 'fp8_e4m3':
      return fnuz ? 'e4m3fnuz' : 'e4m3fn';
    case 'fp8_e5m2':
      return fnuz ? 'e5m2fnuz' : 'e5m2';
    case 'bfloat16':
      return 'bf16';
    case 'float16':
      return 'f16';
    case 'float32':
      return 'f32';
    case 'fp8_per_token_head':
      if (fnuz) {
        throw new CacheError('UNSUPPORTED_DTYPE', `kvCacheDtype 'fp8_per_token_head' stores e4m3fn codes; there is no e4m3fnuz variant (fnuz is set)`);
      }
      return option;
    default:
      assertKvStorageDtype(option, 'kvCacheDtype');
      return option;
  }
}
