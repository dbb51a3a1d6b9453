import { describe, expect, it } from 'vitest';
import { CacheError } from './errors.js';
import {
  assertKvStorageDtype,
  bytesPerElement,
  isFp8Dtype,
  KV_STORAGE_DTYPES,
  kvArrayFor,
  resolveKvCacheDtype,
} from './dtype.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof CacheError) return e.code;
    throw e;
  }
  return undefined;
}

describe('storage dtypes', () => {
  it('bytesPerElement and kvArrayFor agree for every dtype', () => {
    for (const d of KV_STORAGE_DTYPES) {
      const a = kvArrayFor(d, 10);
      expect(a.length).toBe(10);
      expect(a.BYTES_PER_ELEMENT).toBe(bytesPerElement(d));
      expect(a.every((x) => x === 0)).toBe(true);
    }
    expect(kvArrayFor('f32', 3)).toBeInstanceOf(Float32Array);
    expect(kvArrayFor('bf16', 3)).toBeInstanceOf(Uint16Array);
    expect(kvArrayFor('f16', 3)).toBeInstanceOf(Uint16Array);
    expect(kvArrayFor('e4m3fn', 3)).toBeInstanceOf(Uint8Array);
    expect(kvArrayFor('e5m2fnuz', 0).length).toBe(0);
  });

  it('classifies FP8 formats', () => {
    expect(KV_STORAGE_DTYPES.filter(isFp8Dtype)).toEqual(['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz']);
  });

  it('rejects unknown dtypes and bad lengths with typed errors', () => {
    expect(code(() => kvArrayFor('int8' as never, 4))).toBe('UNSUPPORTED_DTYPE');
    expect(code(() => bytesPerElement('fp8' as never))).toBe('UNSUPPORTED_DTYPE');
    expect(code(() => kvArrayFor('f32', -1))).toBe('INVALID_ARGUMENT');
    expect(code(() => kvArrayFor('f32', 1.5))).toBe('INVALID_ARGUMENT');
    expect(code(() => assertKvStorageDtype(7))).toBe('UNSUPPORTED_DTYPE');
    expect(() => kvArrayFor('int8' as never, 4)).toThrow(/dtype must be one of .*got "int8"/);
  });

  it('resolves vLLM kv_cache_dtype strings', () => {
    expect(resolveKvCacheDtype('auto', 'bf16')).toBe('bf16');
    expect(resolveKvCacheDtype('auto', 'f16')).toBe('f16');
    expect(resolveKvCacheDtype('fp8')).toBe('e4m3fn');
    expect(resolveKvCacheDtype('fp8_e4m3')).toBe('e4m3fn');
    expect(resolveKvCacheDtype('fp8', 'bf16', { fnuz: true })).toBe('e4m3fnuz');
    expect(resolveKvCacheDtype('fp8_e5m2')).toBe('e5m2');
    expect(resolveKvCacheDtype('fp8_e5m2', 'bf16', { fnuz: true })).toBe('e5m2fnuz');
    expect(resolveKvCacheDtype('bfloat16')).toBe('bf16');
    expect(resolveKvCacheDtype('float16')).toBe('f16');
    expect(resolveKvCacheDtype('float32')).toBe('f32');
    expect(resolveKvCacheDtype('e5m2')).toBe('e5m2');
    expect(code(() => resolveKvCacheDtype('fp8_inc' as never))).toBe('UNSUPPORTED_DTYPE');
    expect(code(() => resolveKvCacheDtype('auto', 'e4m3fn' as never))).toBe('UNSUPPORTED_DTYPE');
  });
});
