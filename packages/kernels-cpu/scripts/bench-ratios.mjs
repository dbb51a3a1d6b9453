#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Dependency-free ratio report for the native CPU kernels (needs only node and build/Release/kvq_cpu.node).
// Times each op as the MINIMUM over many calls, which is robust on a shared, noisy machine (the vitest benches
// in src/bench/ report means). Prints the decode-attention ratios (fp8 vs bf16 vs f32 KV) and decode-GEMV /
// prefill-GEMM throughput against a memcpy of the weight bytes.
//
// Usage: node scripts/bench-ratios.mjs [--threads N] [--isa avx512|avx2|scalar|auto] [--quick]
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const quick = args.includes('--quick');
const require = createRequire(import.meta.url);
const addon = require(process.env.KVQ_CPU_ADDON ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'build', 'Release', 'kvq_cpu.node'));
const info = addon.cpuInfo();
const threads = Number(opt('threads', info.cpus));
const ctx = new addon.Context(threads, opt('isa', 'auto'), 50);
const CODE = { f32: 0, bf16: 1, f16: 2, e4m3fn: 3, e5m2: 4 };

/** Minimum wall time of one call, in seconds. */
function best(fn, seconds) {
  for (let i = 0; i < 5; i++) fn();
  let min = Infinity;
  const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  do {
    const t0 = process.hrtime.bigint();
    fn();
    const d = Number(process.hrtime.bigint() - t0) / 1e9;
    if (d < min) min = d;
  } while (process.hrtime.bigint() < end);
  return min;
}

let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296);
const normal = () => Math.sqrt(-2 * Math.log(rand() || 1e-12)) * Math.cos(2 * Math.PI * rand());

/** One decode step: 8 query heads over 2 kv heads, block size 16, shuffled block table, realistic KV contents. */
function decodeCall(dtype, context, hs) {
  const nkv = 2, nh = 8, bs = 16, nb = Math.ceil(context / bs) + 1;
  const n = nb * bs * nkv * hs;
  const pool = () => (dtype === 'f32' ? new Float32Array(n) : dtype === 'bf16' ? new Uint16Array(n) : new Uint8Array(n));
  const k = pool(), v = pool();
  const ks = Float32Array.of(4 / 448, 5 / 448), vs = Float32Array.of(4 / 448, 3 / 448);
  const src = new Float32Array(nb * bs * nkv * hs).map(normal);
  const slots = new Int32Array(nb * bs).map((_, i) => i);
  ctx.reshapeAndCache(src, src, slots, nb * bs, CODE[dtype], k, v, nb, bs, nkv, hs, ks, vs);
  const table = new Int32Array(nb).map((_, i) => (i * 7919) % nb);
  const q = new Float32Array(nh * hs).map(normal);
  const out = new Float32Array(nh * hs);
  const a = [q, out, CODE[dtype], k, v, nb, bs, nkv, hs, ks, vs, Int32Array.of(0, 1), Int32Array.of(context), table, nb, 1, nh, 1 / Math.sqrt(hs), 0, 0, new Float32Array(0)];
  return () => ctx.pagedAttention(...a);
}

console.log(`kvq native CPU ratios: ${ctx.isa} kernels, ${ctx.threads} threads, ${info.cpus} CPUs available`);
const t = quick ? 0.3 : 1.0;
console.log('\ndecode attention (8 q / 2 kv heads, block 16), min time per call:');
for (const hs of [64, 128]) {
  for (const context of [512, 4096, 16384]) {
    const r = {};
    for (const dtype of ['f32', 'bf16', 'e4m3fn']) r[dtype] = best(decodeCall(dtype, context, hs), t);
    const us = (s) => `${(s * 1e6).toFixed(1)} us`;
    console.log(
      `  ctx ${String(context).padStart(5)} head ${hs}: f32 ${us(r.f32)}, bf16 ${us(r.bf16)}, fp8 ${us(r.e4m3fn)}` +
        `  -> fp8/bf16 ${(r.e4m3fn / r.bf16).toFixed(2)}, fp8/f32 ${(r.e4m3fn / r.f32).toFixed(2)}`,
    );
  }
}

console.log('\nlinear 4096 x 4096 (weights streamed once per call), min time per call:');
const N = 4096, K = 4096;
for (const dtype of ['f32', 'bf16']) {
  const w = dtype === 'f32' ? new Float32Array(N * K).map(() => normal() * 0.02) : new Uint16Array(N * K).map(() => 0x3c00 + Math.floor(rand() * 0x400));
  const bytes = w.byteLength;
  const srcB = new Uint8Array(w.buffer), dstB = new Uint8Array(bytes);
  const tm = best(() => dstB.set(srcB), t);
  const x1 = new Float32Array(K).map(normal), y1 = new Float32Array(N);
  const tv = best(() => ctx.linear(x1, w, CODE[dtype], 1, K, N, null, y1), t);
  const M = 128, xm = new Float32Array(M * K).map(normal), ym = new Float32Array(M * N);
  const tg = best(() => ctx.linear(xm, w, CODE[dtype], M, K, N, null, ym), t * 2);
  console.log(
    `  ${dtype}: memcpy ${(bytes / tm / 1e9).toFixed(1)} GB/s; decode GEMV ${(bytes / tv / 1e9).toFixed(1)} GB/s ` +
      `(${((tm / tv) * 100).toFixed(0)}% of memcpy), ${((2 * N * K) / tv / 1e9).toFixed(1)} GFLOP/s; ` +
      `prefill GEMM (128 rows) ${((2 * M * N * K) / tg / 1e9).toFixed(1)} GFLOP/s`,
  );
}
ctx.dispose();
