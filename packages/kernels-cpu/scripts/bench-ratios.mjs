#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Dependency-free ratio report for the native CPU kernels (needs only node and build/Release/kvq_cpu.node).
// Times each op as the MINIMUM over many calls, which is robust on a shared, noisy machine (the vitest benches
// in src/bench/ report means). Prints the decode-attention ratios (fp8 vs bf16 vs f32 KV, hot cache and streaming
// from DRAM) and decode-GEMV /
// prefill-GEMM throughput against a memcpy of the weight bytes, and the weight-GEMV bandwidth table of every weight
// dtype (dense, GGML blocks, compressed-tensors; GGML and int8 also with 8-bit activations, int4 with 16-bit) streamed from memory
// against a plain threaded memory read measured in the same run.
//
// Runs on x86-64 (avx512 / avx2 / scalar kernels) and arm64 (neon / scalar; Linux or Apple Silicon) alike; the first
// line names the ISA and the binary. The addon: KVQ_CPU_ADDON, else build/Release/kvq_cpu.node (pnpm build:native),
// else this platform's prebuilt package (npm/<triple>/ in the monorepo, or the installed @kvq/kernels-cpu-<triple>).
//
// Usage: node scripts/bench-ratios.mjs [--threads N] [--isa amx|avx512|avx2|neon-dotprod|neon|scalar|auto] [--quick] [--only weights]
import { existsSync } from 'node:fs';
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
const addonPath = process.env.KVQ_CPU_ADDON || findAddon();
const addon = require(addonPath);

/** build/Release, else the prebuilt binary of this platform (monorepo folder, then the installed package). */
function findAddon() {
  const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
  const local = join(pkg, 'build', 'Release', 'kvq_cpu.node');
  if (existsSync(local)) return local;
  process.report.excludeNetwork = true;
  const libc = process.platform !== 'linux' ? '' : process.report.getReport().header?.glibcVersionRuntime ? '-gnu' : '-musl';
  const triple = `${process.platform}-${process.arch}${libc}${process.platform === 'win32' ? '-gnu' : ''}`;
  const prebuilt = join(pkg, 'npm', triple, 'kvq_cpu.node');
  if (existsSync(prebuilt)) return prebuilt;
  try {
    return require.resolve(`@kvq/kernels-cpu-${triple}/kvq_cpu.node`);
  } catch {
    throw new Error(`no kvq_cpu.node: set KVQ_CPU_ADDON, run pnpm build:native, or install @kvq/kernels-cpu-${triple}`);
  }
}
const info = addon.cpuInfo();
const threads = Number(opt('threads', info.cpus));
const ctx = new addon.Context(threads, opt('isa', 'auto'), 50);
const CODE = { f32: 0, bf16: 1, f16: 2, e4m3fn: 3, e5m2: 4 };
const only = opt('only', 'all');

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

/** Bytes per element of a KV dtype. */
const KV_BYTES = { f32: 4, bf16: 2, e4m3fn: 1 };

/**
 * Decode steps of 8 query heads over 2 kv heads (block size 16, shuffled block table, realistic KV contents) over
 * `copies` distinct KV caches of the same contents, like the layers of a model: one call runs every copy once.
 * copies = 1 is the hot setting (the cache stays in L2/L3 between calls); enough copies to exceed the last-level
 * cache is the streaming setting a real decode step is in (each layer's keys and values come from DRAM).
 */
function decodeCall(dtype, context, hs, copies = 1) {
  const nkv = 2, nh = 8, bs = 16, nb = Math.ceil(context / bs) + 1;
  const n = nb * bs * nkv * hs;
  const pool = () => (dtype === 'f32' ? new Float32Array(n) : dtype === 'bf16' ? new Uint16Array(n) : new Uint8Array(n));
  const ks = Float32Array.of(4 / 448, 5 / 448), vs = Float32Array.of(4 / 448, 3 / 448);
  const src = new Float32Array(n).map(normal);
  const slots = new Int32Array(nb * bs).map((_, i) => i);
  const table = new Int32Array(nb).map((_, i) => (i * 7919) % nb);
  const q = new Float32Array(nh * hs).map(normal);
  const out = new Float32Array(nh * hs);
  const calls = [];
  for (let c = 0; c < copies; c++) {
    const k = pool(), v = pool();
    ctx.reshapeAndCache(src, src, slots, nb * bs, CODE[dtype], k, v, nb, bs, nkv, hs, ks, vs);
    calls.push([q, out, CODE[dtype], k, v, nb, bs, nkv, hs, ks, vs, Int32Array.of(0, 1), Int32Array.of(context), table, nb, 1, nh, 1 / Math.sqrt(hs), 0, 0, new Float32Array(0)]);
  }
  return () => {
    for (const a of calls) ctx.pagedAttention(...a);
  };
}

/** Copies of a (context, head size) KV cache whose bf16 bytes exceed `bytes` (the same count for every dtype). */
function streamingCount(context, hs, bytes) {
  const perCopy = 2 * (Math.ceil(context / 16) + 1) * 16 * 2 * hs * KV_BYTES.bf16;
  return Math.max(2, Math.ceil(bytes / perCopy));
}

console.log(
  `kvq native CPU ratios: ${ctx.isa} kernels (${process.platform}-${process.arch}; usable: ${info.isas.join(', ')}), ` +
    `${ctx.threads} threads, ${info.cpus} CPUs available; ${addonPath}`,
);
const t = quick ? 0.3 : 1.0;
if (only === 'all') {
for (const setting of ['hot', 'streaming']) {
  const STREAM_KV = 256 * 1024 * 1024;
  console.log(
    setting === 'hot'
      ? '\ndecode attention, hot cache (8 q / 2 kv heads, block 16; the same KV every call), min time per call:'
      : `\ndecode attention, streaming (distinct KV caches totalling >= ${STREAM_KV >> 20} MiB of bf16, like a model's layers; ` +
          'every call reads its keys and values from DRAM), min time per cache:',
  );
  for (const hs of [64, 128]) {
    for (const context of [512, 4096, 16384]) {
      const copies = setting === 'hot' ? 1 : streamingCount(context, hs, STREAM_KV);
      const r = {};
      for (const dtype of ['f32', 'bf16', 'e4m3fn']) r[dtype] = best(decodeCall(dtype, context, hs, copies), setting === 'hot' ? t : t * 2) / copies;
      const us = (s) => `${(s * 1e6).toFixed(1)} us`;
      const gbs = (d) => ((2 * context * 2 * hs * KV_BYTES[d]) / r[d] / 1e9).toFixed(1);
      console.log(
        `  ctx ${String(context).padStart(5)} head ${hs}${setting === 'hot' ? '' : ` (${copies} caches)`}: f32 ${us(r.f32)}, bf16 ${us(r.bf16)} (${gbs('bf16')} GB/s), ` +
          `fp8 ${us(r.e4m3fn)} (${gbs('e4m3fn')} GB/s)  -> fp8/bf16 ${(r.e4m3fn / r.bf16).toFixed(2)}, fp8/f32 ${(r.e4m3fn / r.f32).toFixed(2)}`,
      );
    }
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
  const tv = best(() => ctx.linear(x1, 1, w, CODE[dtype], N, K, null, null, 0, null, y1, 0, 0), t);
  const M = 128, xm = new Float32Array(M * K).map(normal), ym = new Float32Array(M * N);
  const tg = best(() => ctx.linear(xm, M, w, CODE[dtype], N, K, null, null, 0, null, ym, 0, 0), t * 2);
  console.log(
    `  ${dtype}: memcpy ${(bytes / tm / 1e9).toFixed(1)} GB/s; decode GEMV ${(bytes / tv / 1e9).toFixed(1)} GB/s ` +
      `(${((tm / tv) * 100).toFixed(0)}% of memcpy), ${((2 * N * K) / tv / 1e9).toFixed(1)} GFLOP/s; ` +
      `prefill GEMM (128 rows) ${((2 * M * N * K) / tg / 1e9).toFixed(1)} GFLOP/s`,
  );
}
}


// ---- weight GEMV bandwidth: every weight dtype ----------------------------------------------------

/** Weight dtypes (csrc/ops.h DtypeCode) with their block size and bytes, or bytes per element. */
const WEIGHTS = [
  { name: 'f32', code: 0, elems: 1, bytes: 4 },
  { name: 'bf16', code: 1, elems: 1, bytes: 2 },
  { name: 'f16', code: 2, elems: 1, bytes: 2 },
  { name: 'q8_0', code: 16, elems: 32, bytes: 34, f16: [0] },
  { name: 'q6_k', code: 23, elems: 256, bytes: 210, f16: [208] },
  { name: 'q5_k', code: 22, elems: 256, bytes: 176, f16: [0, 2] },
  { name: 'q5_1', code: 20, elems: 32, bytes: 24, f16: [0, 2] },
  { name: 'q5_0', code: 19, elems: 32, bytes: 22, f16: [0] },
  { name: 'q4_k', code: 21, elems: 256, bytes: 144, f16: [0, 2] },
  { name: 'q4_1', code: 18, elems: 32, bytes: 20, f16: [0, 2] },
  { name: 'q4_0', code: 17, elems: 32, bytes: 18, f16: [0] },
  { name: 'fp8_e4m3', code: 24, elems: 1, bytes: 1, ct: true },
  { name: 'int8', code: 25, elems: 1, bytes: 1, ct: true },
  { name: 'int4 g128', code: 26, elems: 2, bytes: 1, ct: true, group: 128 },
];

/** A random weight matrix [rows, cols] of a WEIGHTS entry: positional args (data, code, rows, cols, scale, zp, group). */
function randomWeight(d, rows, cols) {
  const n = (rows * cols) / d.elems;
  if (d.code === 0) return [new Float32Array(rows * cols).map(() => normal() * 0.02), 0, rows, cols, null, null, 0];
  if (d.code <= 2) return [new Uint16Array(rows * cols).map(() => 0x2000 + Math.floor(rand() * 0x1000)), d.code, rows, cols, null, null, 0];
  const data = d.code === 25 ? new Int8Array(n * d.bytes) : new Uint8Array(n * d.bytes);
  const u32 = new Uint32Array(data.buffer, 0, Math.floor(data.byteLength / 4));
  for (let i = 0; i < u32.length; i++) u32[i] = (rand() * 4294967296) >>> 0;
  if (d.code === 24) for (let i = 0; i < data.length; i++) if ((data[i] & 0x7f) === 0x7f) data[i] = 0x38;
  if (d.f16) {
    const view = new DataView(data.buffer);
    for (let b = 0; b < n; b++) for (const off of d.f16) view.setUint16(b * d.bytes + off, 0x1800 + Math.floor(rand() * 0x400), true);
  }
  if (!d.ct) return [data, d.code, rows, cols, null, null, 0];
  const scale = new Float32Array(d.group ? (rows * cols) / d.group : rows).map(() => 0.001 + rand() * 0.01);
  return [data, d.code, rows, cols, scale, null, d.group ?? 0];
}

/** Distinct copies of a weight's data (scales shared) totalling at least `bytes`, so one pass streams from DRAM. */
function streamingCopies(w, bytes) {
  const n = Math.ceil(bytes / w[0].byteLength);
  return Array.from({ length: n }, () => [w[0].slice(), ...w.slice(1)]);
}

function weightTable() {
  const t = quick ? 0.2 : 0.5;
  const rounds = quick ? 1 : 3;
  const STREAM = 128 * 1024 * 1024;
  // The memory-read baseline: the addon streaming a 128 MiB buffer once on the same pool (no writes), measured
  // right before every GEMV measurement and the best rate kept, so both see the machine at its least busy (a shared
  // machine's neighbours otherwise decide the ratio).
  // Two plain reads, the faster kept: readBytes (64-bit sums over 1 MiB chunks handed out to the threads) and
  // amaxTensor over the same bytes as float32 (contiguous halves per thread, as the GEMV splits its rows).
  const big = new Uint8Array(STREAM).fill(3);
  const bigF = new Float32Array(big.buffer);
  let readBw = 0;
  const probe = () => {
    readBw = Math.max(readBw, big.byteLength / best(() => ctx.readBytes(big, big.length), t / 4));
    readBw = Math.max(readBw, big.byteLength / best(() => ctx.amaxTensor(bigF, bigF.length), t / 4));
  };
  const N = 4096, K = 4096;
  const x = new Float32Array(K).map(normal);
  const y = new Float32Array(N);
  const rows = [];
  for (const d of WEIGHTS) {
    // Copies of one 4096 x 4096 matrix past the last-level cache: one GEMV per copy, as a decode step streams its
    // layers. GGML weights also with GGML's 8-bit activations (activations code 1: int8 dot products on AVX2), int8
    // weights with W8A8's per-row int8 activations, int4 weights with 16-bit activation blocks (code 2: VNNI).
    const copies = streamingCopies(randomWeight(d, N, K), STREAM);
    const bytes = copies.reduce((s, w) => s + w[0].byteLength + (w[4] ? w[4].byteLength : 0), 0);
    const modes = d.elems >= 32 || d.code === 25 ? [0, 1] : d.code === 26 ? [0, 2] : [0];
    const tv = [Infinity, Infinity];
    for (let round = 0; round < rounds; round++) {
      for (const m of modes) {
        probe();
        tv[m ? 1 : 0] = Math.min(tv[m ? 1 : 0], best(() => copies.forEach((w) => ctx.linear(x, 1, ...w, null, y, m, 0)), t));
      }
    }
    rows.push({ d, bytes, n: copies.length, tv });
  }
  probe();
  // The dense f32 GEMV (4 weight rows of 16 KiB streamed side by side per thread) reads faster than both plain reads
  // on some machines (2-core Zen 3: ~36 vs ~27 GB/s; 2-core Zen 5: up to 93 vs 60-70). The percentages are of the
  // best of all three, so no type is flattered; the plain read rate is printed too.
  const f32 = rows.find((r) => r.d.code === 0);
  const plainBw = readBw;
  readBw = Math.max(readBw, f32.bytes / f32.tv[0]);
  console.log(
    `\nweight GEMV (1 row), ${N}x${K} copies streamed past the caches (>= 128 MiB per pass), best of ${rounds} rounds; ` +
      `read bandwidth (best of readBytes / amaxTensor over 128 MiB between the measurements and the f32 GEMV, same threads): ${(readBw / 1e9).toFixed(1)} GB/s ` +
      `(plain reads alone: ${(plainBw / 1e9).toFixed(1)} GB/s)`,
  );
  console.log('  dtype      bytes/w  copies  f32 act: GB/s  %read  8/16-bit act: GB/s  %read  (int4: 16-bit)');
  for (const { d, bytes, n, tv } of rows) {
    const col = (tm) => (tm === Infinity ? '              -      -' : `${(bytes / tm / 1e9).toFixed(1).padStart(15)} ${((bytes / tm / readBw) * 100).toFixed(0).padStart(5)}%`);
    console.log(`  ${d.name.padEnd(10)} ${(bytes / n / (N * K)).toFixed(3).padStart(7)} ${String(n).padStart(7)} ${col(tv[0])} ${col(tv[1])}`);
  }
}

weightTable();
ctx.dispose();
