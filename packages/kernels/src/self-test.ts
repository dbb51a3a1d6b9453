/**
 * A fast self-test the loader runs on every native candidate before choosing it: a few small ops with fixed
 * pseudo-random inputs, compared against the reference backend. It catches a binary that loads but computes
 * garbage (wrong ABI, miscompiled SIMD path) in about a millisecond.
 * @module
 */
import type { KernelBackend, KvLayerCache, WeightMatrix } from './contract.js';
import { KernelError } from './errors.js';
import { createReferenceBackend } from './reference/backend.js';
import { buildRopeTable } from './rope.js';

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
}

function fill(n: number, rnd: () => number, scale = 2): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rnd() * scale;
  return a;
}

function close(op: string, got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, atol: number): void {
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (!(Math.abs(g - w) <= atol + rtol * Math.abs(w)) && !(Number.isNaN(g) && Number.isNaN(w))) {
      throw new KernelError('UNSUPPORTED', `${op}: element ${i} is ${g}, the reference gives ${w}`, { argument: op });
    }
  }
}

function makeCache(dtype: 'e4m3fn', numBlocks: number, blockSize: number, numKvHeads: number, headSize: number): KvLayerCache {
  const n = numBlocks * blockSize * numKvHeads * headSize;
  return {
    dtype,
    valueDtype: dtype,
    numBlocks,
    blockSize,
    numKvHeads,
    headSize,
    key: new Uint8Array(n),
    value: new Uint8Array(n),
    kScale: Float32Array.of(0.01, 0.02),
    vScale: Float32Array.of(0.015, 0.005),
    qScale: Float32Array.of(0.01, 0.02, 0.01, 0.03),
  };
}

/**
 * Run the self-test on `backend`. Throws (a {@link KernelError} or whatever the backend throws) on the first
 * mismatch or failure; returns normally when every check passes.
 */
export function selfTest(backend: KernelBackend): void {
  const ref = createReferenceBackend();
  const rnd = lcg(0x6b7671);

  // linear, bf16 weights with bias
  const x = fill(2 * 5, rnd);
  const wbits = new Uint16Array(3 * 5);
  for (let i = 0; i < wbits.length; i++) wbits[i] = (0x3e00 + Math.floor((rnd() + 0.5) * 0x200)) | (rnd() < 0 ? 0x8000 : 0);
  const weight: WeightMatrix = { dtype: 'bf16', data: wbits, rows: 3, cols: 5 };
  const bias = fill(3, rnd);
  const yGot = new Float32Array(6);
  const yWant = new Float32Array(6);
  backend.linear({ x, weight, bias, out: yGot, rows: 2 });
  ref.linear({ x, weight, bias, out: yWant, rows: 2 });
  close('linear', yGot, yWant, 1e-5, 1e-6);

  // rmsNorm and siluAndMul
  const h = fill(2 * 8, rnd);
  const g = fill(8, rnd);
  const nGot = new Float32Array(16);
  const nWant = new Float32Array(16);
  backend.rmsNorm({ x: h, weight: g, out: nGot, rows: 2, hidden: 8, eps: 1e-5 });
  ref.rmsNorm({ x: h, weight: g, out: nWant, rows: 2, hidden: 8, eps: 1e-5 });
  close('rmsNorm', nGot, nWant, 1e-5, 1e-6);
  backend.siluAndMul({ gate: h, up: nWant, out: nGot, length: 16 });
  const sWant = new Float32Array(16);
  ref.siluAndMul({ gate: h, up: nWant, out: sWant, length: 16 });
  close('siluAndMul', nGot, sWant, 1e-5, 1e-6);

  // rope (rotate_half) then reshapeAndCache + pagedAttention on a per-head-scaled e4m3fn cache, GQA 2
  const table = buildRopeTable({ rotaryDim: 8, theta: 10000, maxPositions: 16 });
  const numHeads = 4;
  const numKvHeads = 2;
  const headSize = 8;
  const numTokens = 5; // sequence 0: 3 prompt tokens; sequence 1: 2 new tokens after 4 cached
  const qGot = fill(numTokens * numHeads * headSize, rnd);
  const kGot = fill(numTokens * numKvHeads * headSize, rnd);
  const qWant = qGot.slice();
  const kWant = kGot.slice();
  const positions = Int32Array.of(0, 1, 2, 4, 5);
  backend.rope({ query: qGot, key: kGot, positions, numTokens, numHeads, numKvHeads, headSize, table, style: 'rotate_half' });
  ref.rope({ query: qWant, key: kWant, positions, numTokens, numHeads, numKvHeads, headSize, table, style: 'rotate_half' });
  close('rope', qGot, qWant, 1e-5, 1e-6);
  close('rope', kGot, kWant, 1e-5, 1e-6);

  const cGot = makeCache('e4m3fn', 4, 4, numKvHeads, headSize);
  const cWant = makeCache('e4m3fn', 4, 4, numKvHeads, headSize);
  const v = fill(numTokens * numKvHeads * headSize, rnd);
  // Sequence 1's first 4 positions (block 2) are pre-filled by the reference in both caches.
  const prefixK = fill(4 * numKvHeads * headSize, rnd);
  const prefixV = fill(4 * numKvHeads * headSize, rnd);
  for (const c of [cGot, cWant]) {
    ref.reshapeAndCache({ key: prefixK, value: prefixV, slotMapping: Int32Array.of(8, 9, 10, 11), numTokens: 4, cache: c });
  }
  const slotMapping = Int32Array.of(0, 1, 2, 12, 13);
  backend.reshapeAndCache({ key: kWant, value: v, slotMapping, numTokens, cache: cGot });
  ref.reshapeAndCache({ key: kWant, value: v, slotMapping, numTokens, cache: cWant });
  close('reshapeAndCache', cGot.key, cWant.key, 0, 0);
  close('reshapeAndCache', cGot.value, cWant.value, 0, 0);

  const attn = {
    query: qWant,
    cache: cWant,
    queryStartLoc: Int32Array.of(0, 3, 5),
    seqLens: Int32Array.of(3, 6),
    blockTables: Int32Array.of(0, 1, 2, 3),
    maxBlocksPerSeq: 2,
    numSeqs: 2,
    numHeads,
  };
  const aGot = new Float32Array(qWant.length);
  const aWant = new Float32Array(qWant.length);
  backend.pagedAttention({ ...attn, out: aGot });
  ref.pagedAttention({ ...attn, out: aWant });
  close('pagedAttention', aGot, aWant, 1e-4, 1e-5);
  backend.pagedAttention({ ...attn, out: aGot, fp8Query: {} });
  ref.pagedAttention({ ...attn, out: aWant, fp8Query: {} });
  close('pagedAttention (fp8 query)', aGot, aWant, 1e-4, 1e-5);

  // amax
  const amaxGot = backend.amaxTensor({ x: v, length: v.length });
  close('amaxTensor', [amaxGot], [ref.amaxTensor({ x: v, length: v.length })], 0, 0);
}
