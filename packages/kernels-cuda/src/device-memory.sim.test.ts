/**
 * The device-resident contract on the CUDA simulator: device arrays (alloc / write / read / free and their errors),
 * ops on device arrays without transfers or waits, KV pools given to the device (copy-on-write copies on the device,
 * blocks to and from the host), and what the GPU runtime counts. A missing simulator build skips with the reason,
 * except in CI (`KVQ_REQUIRE_GPU_COMPILERS=1`), where it fails.
 */
import { isKernelError, type KernelErrorCode } from '@kvq/kernels';
import { makeKvCache } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { createSimBackend, simAvailability } from './sim.js';

const required = process.env.KVQ_REQUIRE_GPU_COMPILERS === '1';
const avail = simAvailability(32);

function code(f: () => unknown): KernelErrorCode | string {
  try {
    f();
  } catch (e) {
    return isKernelError(e) ? e.code : `not a KernelError: ${String(e)}`;
  }
  return 'no throw';
}

describe.skipIf(!avail.available && !required)(`device memory (CUDA simulator)${avail.available ? '' : `: not built (${avail.reason})`}`, () => {
  it('write / read round-trip float32 and int32 arrays, at offsets', () => {
    const gpu = createSimBackend();
    try {
      const m = gpu.memory;
      const a = m.alloc('f32', 8);
      m.write(a, Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]));
      m.write(a, Float32Array.from([-1, -2]), 3);
      const back = new Float32Array(4);
      m.read(a, back, 2);
      expect([...back]).toEqual([3, -1, -2, 6]);
      const i = m.alloc('i32', 3);
      m.write(i, Int32Array.from([7, -8, 9]));
      const ib = new Int32Array(3);
      m.read(i, ib);
      expect([...ib]).toEqual([7, -8, 9]);
      expect(a.length).toBe(8);
      expect(a.backend).toBe(gpu.name);
    } finally {
      gpu.dispose();
    }
  });

  it('bad input: typed errors, never a crash', () => {
    const gpu = createSimBackend();
    const other = createSimBackend();
    try {
      const m = gpu.memory;
      const a = m.alloc('f32', 4);
      expect(code(() => m.alloc('f64' as never, 4))).toBe('INVALID_ARGUMENT');
      expect(code(() => m.alloc('f32', 0))).toBe('INVALID_ARGUMENT');
      expect(code(() => m.write(a, new Int32Array(4)))).toBe('WRONG_ARRAY_TYPE');
      expect(code(() => m.write(a, new Float32Array(3), 2))).toBe('OUT_OF_RANGE');
      expect(code(() => m.read(a, new Float32Array(5)))).toBe('OUT_OF_RANGE');
      // An op given another backend's array, a freed one, one too short or of the wrong kind.
      const x = other.memory.alloc('f32', 4);
      expect(code(() => gpu.add({ a: x, b: a, out: a, length: 4 }))).toBe('WRONG_ARRAY_TYPE');
      const ids = m.alloc('i32', 4);
      expect(code(() => gpu.add({ a: ids, b: a, out: a, length: 4 }))).toBe('WRONG_ARRAY_TYPE');
      expect(code(() => gpu.add({ a, b: a, out: a, length: 5 }))).toBe('SHAPE_MISMATCH');
      m.free(a);
      m.free(a); // idempotent
      expect(code(() => gpu.add({ a, b: new Float32Array(4), out: new Float32Array(4), length: 4 }))).toBe('INVALID_ARGUMENT');
      expect(code(() => m.read(a, new Float32Array(1)))).toBe('INVALID_ARGUMENT');
    } finally {
      gpu.dispose();
      other.dispose();
    }
  });

  it('ops chained on device arrays move nothing and wait for nothing until the read', () => {
    const gpu = createSimBackend();
    try {
      const m = gpu.memory;
      const n = 1000;
      const ha = Float32Array.from({ length: n }, (_, i) => i / 7);
      const hb = Float32Array.from({ length: n }, (_, i) => 1 - i / 11);
      const a = m.alloc('f32', n);
      const b = m.alloc('f32', n);
      const s = m.alloc('f32', n);
      m.write(a, ha);
      m.write(b, hb);
      const before = gpu.transferStats();
      gpu.add({ a, b, out: s, length: n });
      gpu.siluAndMul({ gate: s, up: a, out: s, length: n }); // in place on the device
      gpu.rmsNorm({ x: s, weight: new Float32Array(n).fill(1), out: s, rows: 1, hidden: n, eps: 1e-6 });
      const mid = gpu.transferStats();
      const got = new Float32Array(n);
      m.read(s, got);
      const after = gpu.transferStats();
      expect(mid.deviceToHostBytes - before.deviceToHostBytes).toBe(0);
      expect(mid.waits - before.waits).toBe(0); // asynchronous submission
      expect(mid.hostToDeviceBytes - before.hostToDeviceBytes).toBe(n * 4); // the norm weight, once
      expect(after.deviceToHostBytes - mid.deviceToHostBytes).toBe(n * 4);
      expect(after.waits - mid.waits).toBe(1);
      // The same chain on host arrays, for the values.
      const hs = new Float32Array(n);
      gpu.add({ a: ha, b: hb, out: hs, length: n });
      gpu.siluAndMul({ gate: hs, up: ha, out: hs, length: n });
      gpu.rmsNorm({ x: hs, weight: new Float32Array(n).fill(1), out: hs, rows: 1, hidden: n, eps: 1e-6 });
      expect([...got]).toEqual([...hs]);
    } finally {
      gpu.dispose();
    }
  });

  it('attached KV pools: copy-on-write copies on the device, blocks to and from the host', () => {
    const gpu = createSimBackend();
    try {
      const m = gpu.memory;
      const cache = makeKvCache({ dtype: 'bf16', numBlocks: 6, blockSize: 4, numKvHeads: 2, headSize: 8 });
      const per = cache.key.length / cache.numBlocks;
      for (let i = 0; i < cache.key.length; i++) {
        cache.key[i] = (i * 37) & 0x3fff;
        cache.value[i] = (i * 91) & 0x3fff;
      }
      const original = { k: cache.key.slice(), v: cache.value.slice() };
      m.attachCache(cache);
      expect(m.isAttached(cache)).toBe(true);
      m.attachCache(cache); // idempotent
      // The host pools are not the cache any more: a host write is invisible until cacheFromHost.
      cache.key.fill(0, 2 * per, 3 * per);
      m.copyCacheBlocks(cache, [{ src: 2, dst: 4 }]);
      m.cacheToHost(cache, [4]);
      expect([...cache.key.subarray(4 * per, 5 * per)]).toEqual([...original.k.subarray(2 * per, 3 * per)]);
      m.cacheFromHost(cache, [2]); // now block 2's keys are zero on the device too
      m.copyCacheBlocks(cache, [{ src: 2, dst: 5 }]);
      expect(code(() => m.cacheToHost(cache, [6]))).toBe('OUT_OF_RANGE');
      m.detachCache(cache);
      expect(m.isAttached(cache)).toBe(false);
      expect([...cache.key.subarray(5 * per, 6 * per)]).toEqual(new Array(per).fill(0));
      expect([...cache.value.subarray(5 * per, 6 * per)]).toEqual([...original.v.subarray(2 * per, 3 * per)]);
      expect([...cache.key.subarray(0, 2 * per)]).toEqual([...original.k.subarray(0, 2 * per)]);
    } finally {
      gpu.dispose();
    }
  });
});
