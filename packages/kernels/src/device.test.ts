import { describe, expect, it } from 'vitest';
import { DEVICE_ARRAY, hostArgs, isDeviceArray, type DeviceArray } from './device.js';
import { isKernelError } from './errors.js';
import { createReferenceBackend } from './reference/backend.js';
import { checkActivation, checkNoOverlap } from './validate.js';

/** A device array as a GPU backend would hand out (only its shape matters to the validators). */
function fake(kind: 'f32' | 'i32', length: number): DeviceArray {
  return { [DEVICE_ARRAY]: true, kind, length, backend: 'fake-gpu' };
}

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return isKernelError(e) ? `${e.code}${e.argument ? `:${e.argument}` : ''}` : `other: ${String(e)}`;
  }
  return 'no throw';
}

describe('device arrays in the contract', () => {
  it('are recognized by their brand only', () => {
    expect(isDeviceArray(fake('f32', 4))).toBe(true);
    expect(isDeviceArray(new Float32Array(4))).toBe(false);
    expect(isDeviceArray({ kind: 'f32', length: 4, backend: 'x' })).toBe(false);
    expect(isDeviceArray(null)).toBe(false);
  });

  it('validators take a float32 device array of sufficient length where an activation goes', () => {
    expect(checkActivation('x', fake('f32', 8), 8)).toBeDefined();
    expect(codeOf(() => checkActivation('x', fake('f32', 7), 8))).toBe('SHAPE_MISMATCH:x');
    expect(codeOf(() => checkActivation('x', fake('i32', 8), 8))).toBe('WRONG_ARRAY_TYPE:x');
    expect(codeOf(() => checkActivation('x', new Int32Array(8), 8))).toBe('WRONG_ARRAY_TYPE:x');
  });

  it('device arrays overlap only when they are the same array (exact alias where the op allows it)', () => {
    const a = fake('f32', 8);
    const b = fake('f32', 8);
    expect(() => checkNoOverlap('out', a, 8, 'x', b, 8)).not.toThrow();
    expect(() => checkNoOverlap('out', a, 8, 'x', new Float32Array(8), 8)).not.toThrow();
    expect(() => checkNoOverlap('out', a, 8, 'x', a, 8, true)).not.toThrow();
    expect(codeOf(() => checkNoOverlap('out', a, 8, 'x', a, 8))).toBe('INVALID_ARGUMENT:out');
    expect(codeOf(() => checkNoOverlap('out', a, 8, 'x', a, 4, true))).toBe('INVALID_ARGUMENT:out');
  });

  it('host backends refuse them with WRONG_ARRAY_TYPE naming the field (the reference never reads a device array)', () => {
    const ref = createReferenceBackend();
    expect(ref.memory).toBeUndefined();
    const x = fake('f32', 4);
    expect(codeOf(() => ref.add({ a: x, b: new Float32Array(4), out: new Float32Array(4), length: 4 }))).toBe('WRONG_ARRAY_TYPE:a');
    expect(codeOf(() => ref.rmsNorm({ x: new Float32Array(4), weight: new Float32Array(4).fill(1), out: x, rows: 1, hidden: 4, eps: 1e-6 }))).toBe(
      'WRONG_ARRAY_TYPE:out',
    );
    expect(codeOf(() => hostArgs('op', { q: x }))).toBe('WRONG_ARRAY_TYPE:q');
    const args = { q: new Float32Array(2), n: 2 };
    expect(hostArgs('op', args)).toBe(args);
  });
});

describe('HostMemory.copyCacheBlocks', () => {
  it('copies each pool by its own block length (V stored in another dtype than K)', async () => {
    const { HostMemory } = await import('./device.js');
    const { makeKvCache } = await import('./testing/random.js');
    const cache = makeKvCache({ dtype: 'bf16', valueDtype: 'int4_g32', numBlocks: 4, blockSize: 4, numKvHeads: 1, headSize: 64 });
    const kPer = cache.key.length / 4;
    const vPer = cache.value.length / 4;
    expect(kPer).not.toBe(vPer);
    cache.key.fill(3, kPer, 2 * kPer);
    cache.value.fill(5, vPer, 2 * vPer);
    new HostMemory('test').copyCacheBlocks(cache, [{ src: 1, dst: 3 }]);
    expect(Array.from(cache.key.subarray(3 * kPer)).every((x) => x === 3)).toBe(true);
    expect(Array.from(cache.value.subarray(3 * vPer)).every((x) => x === 5)).toBe(true);
    expect(Array.from(cache.value.subarray(2 * vPer, 3 * vPer)).every((x) => x === 0)).toBe(true);
  });
});
