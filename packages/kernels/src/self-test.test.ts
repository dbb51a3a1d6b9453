import { describe, expect, it } from 'vitest';
import type { KernelBackend } from './contract.js';
import { createReferenceBackend } from './reference/backend.js';
import { selfTest } from './self-test.js';

const ref = createReferenceBackend();

describe('selfTest', () => {
  it('passes the reference', () => {
    expect(() => selfTest(createReferenceBackend())).not.toThrow();
  });

  it.each<[string, Partial<KernelBackend>, RegExp]>([
    ['rmsNorm without eps', { rmsNorm: (a) => ref.rmsNorm({ ...a, eps: 1 }) }, /^rmsNorm/],
    ['rope ignoring keys', { rope: (a) => ref.rope({ ...a, key: new Float32Array(a.key.length) }) }, /^rope/],
    [
      'reshapeAndCache with per-tensor scales only',
      { reshapeAndCache: (a) => ref.reshapeAndCache({ ...a, cache: { ...a.cache, kScale: a.cache.kScale.subarray(0, 1) , vScale: a.cache.vScale.subarray(0, 1) } }) },
      /^reshapeAndCache/,
    ],
    ['pagedAttention ignoring fp8Query', { pagedAttention: (a) => ref.pagedAttention({ ...a, fp8Query: undefined }) }, /^pagedAttention \(fp8 query\)/],
    ['siluAndMul as plain product', { siluAndMul: (a) => ref.add({ a: a.gate, b: a.up, out: a.out, length: a.length }) }, /^siluAndMul/],
    ['amaxTensor off', { amaxTensor: () => 1 }, /^amaxTensor/],
  ])('catches %s', (_name, override, message) => {
    expect(() => selfTest({ ...createReferenceBackend(), ...override })).toThrow(message);
  });
});
