#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Decode-attention time of the write-time-scaled KV dtypes (docs/spec/kv-dtypes.md: fp8/int8/int4_per_token_head,
// int4_g16/32/64, nvfp4, q4_0; kernels in csrc/kvquant_impl.h) against bf16 and FP8 per tensor (e4m3fn), the companion of
// scripts/bench-ratios.mjs's fp8/bf16 rows, measured the same way: the MINIMUM time per call over many calls (robust
// on a shared machine), hot (one KV cache that stays in the caches) and streaming (distinct caches past the
// last-level cache, as a model's layers are read from DRAM in a decode step). Each row: time per call and KV bytes
// read per second, and the ratio to bf16 in the same setting. Rows `K/V` are caches storing V in another dtype than K
// (csrc/kvmixed_impl.h), to compare with the rows of their two dtypes.
//
// Usage: node scripts/bench-kv-quant.mjs [--threads N] [--isa amx|avx512|avx2|neon|scalar|auto] [--quick] [--head 128]
//        [--pairs int8_per_token_head/int4_g32_f16,bf16/e4m3fn,...]   (mixed K/V rows; --pairs none for none)
//   KVQ_CPU_ADDON: path of kvq_cpu.node (default build/Release/kvq_cpu.node, `pnpm build:native`).
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
if (addon.kvQuantKernels !== true) throw new Error('this kvq_cpu.node has no kernels for the write-time-scaled KV dtypes: rebuild it');
const info = addon.cpuInfo();
const ctx = new addon.Context(Number(opt('threads', info.cpus)), opt('isa', 'auto'), 50);
const hs = Number(opt('head', '128'));

/** Native dtype codes (csrc/ops.h DtypeCode) and, for the write-time-scaled ones, the group size and code bits. */
const DTYPES = {
  bf16: { code: 1 },
  e4m3fn: { code: 3 },
  fp8_per_token_head: { code: 32, group: 0, bits: 8 },
  int8_per_token_head: { code: 33, group: 0, bits: 8 },
  int4_per_token_head: { code: 34, group: 0, bits: 4 },
  int4_g16: { code: 35, group: 16, bits: 4 },
  int4_g32: { code: 36, group: 32, bits: 4 },
  int4_g64: { code: 37, group: 64, bits: 4 },
  nvfp4: { code: 38, group: 16, bits: 4, scaleBytes: 1 },
  q4_0: { code: 39, group: 32, bits: 4, scaleBytes: 2 },
  int4_g32_f16: { code: 40, group: 32, bits: 4, scaleBytes: 2 },
};

const PAIRS = (opt('pairs', 'int8_per_token_head/int4_g32_f16,int8_per_token_head/nvfp4,bf16/e4m3fn,bf16/int4_g32_f16') ?? '')
  .split(',')
  .filter((p) => p && p !== 'none');
if (PAIRS.length > 0 && addon.mixedKvKernels !== true) throw new Error('this kvq_cpu.node has no kernels for separate K and V dtypes: rebuild it');

/** Bytes of one block of one pool (@kvq/cache kvBlockLayout: codes, padding, scales, padding). */
function blockBytes(name, bs, nkv) {
  const d = DTYPES[name];
  if (d.code === 1) return bs * nkv * hs * 2;
  if (d.code === 3) return bs * nkv * hs;
  const pad4 = (n) => Math.ceil(n / 4) * 4;
  const groups = d.group ? hs / d.group : 1;
  return pad4(pad4((bs * nkv * hs * d.bits) / 8) + bs * nkv * groups * (d.scaleBytes ?? 4));
}

/** Minimum wall time of one call, in seconds. */
function best(fn, seconds) {
  for (let i = 0; i < 3; i++) fn();
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
const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296;
const normal = () => Math.sqrt(-2 * Math.log(rand() || 1e-12)) * Math.cos(2 * Math.PI * rand());

/**
 * One decode step (8 query heads over 2 kv heads, block size 16, shuffled block table) over `copies` distinct KV
 * caches written by the kernels' own reshapeAndCache; returns [call, KV bytes one copy's attention reads].
 */
function decodeCall(name, context, copies) {
  const nkv = 2, nh = 8, bs = 16, nb = Math.ceil(context / bs) + 1;
  // `K/V`: the packed code of a mixed cache (csrc/napi_args.h readCache), each pool in its own dtype.
  const [kName, vName = kName] = name.split('/');
  const kCode = DTYPES[kName].code;
  const vCode = DTYPES[vName].code;
  const code = kName === vName ? kCode : kCode | ((vCode + 1) << 8);
  const pool = (n) => {
    const bb = blockBytes(n, bs, nkv);
    return DTYPES[n].code === 1 ? new Uint16Array((nb * bb) / 2) : new Uint8Array(nb * bb);
  };
  // FP8 per tensor: scales fitting the data to 448; nvfp4: its tensor scale (amax / (448 x 6)); others ignore them.
  const scale = (c) => (c === 38 ? Float32Array.of(4.5 / (448 * 6)) : Float32Array.of(4.5 / 448));
  const ks = scale(kCode);
  const vs = scale(vCode);
  const src = new Float32Array(nb * bs * nkv * hs).map(normal);
  const slots = new Int32Array(nb * bs).map((_, i) => i);
  const table = new Int32Array(nb).map((_, i) => (i * 7919) % nb);
  const q = new Float32Array(nh * hs).map(normal);
  const out = new Float32Array(nh * hs);
  const calls = [];
  for (let c = 0; c < copies; c++) {
    const k = pool(kName), v = pool(vName);
    ctx.reshapeAndCache(src, src, slots, nb * bs, code, k, v, nb, bs, nkv, hs, ks, vs);
    calls.push([q, out, code, k, v, nb, bs, nkv, hs, ks, vs, Int32Array.of(0, 1), Int32Array.of(context), table, nb, 1, nh, 1 / Math.sqrt(hs), 0, 0, new Float32Array(0)]);
  }
  const read = Math.ceil(context / bs) * (blockBytes(kName, bs, nkv) + blockBytes(vName, bs, nkv));
  const run = () => {
    for (const a of calls) ctx.pagedAttention(...a);
  };
  return [run, read];
}

const STREAM_KV = 256 * 1024 * 1024;
const t = quick ? 0.3 : 1.0;
console.log(`kvq KV-dtype decode attention: ${ctx.isa} kernels, ${ctx.threads} threads, ${info.cpus} CPUs; head ${hs}, 8 q / 2 kv heads, block 16`);
for (const setting of ['hot', 'streaming']) {
  for (const context of [4096, 16384]) {
    // The same number of caches for every dtype: enough bf16 caches to exceed STREAM_KV.
    const copies = setting === 'hot' ? 1 : Math.max(2, Math.ceil(STREAM_KV / (2 * (Math.ceil(context / 16) + 1) * blockBytes('bf16', 16, 2))));
    console.log(`\n${setting}, context ${context}${setting === 'hot' ? '' : ` (${copies} caches)`}: min time per cache`);
    let bf16 = 0;
    for (const name of [...Object.keys(DTYPES), ...PAIRS]) {
      const [call, bytes] = decodeCall(name, context, copies);
      const s = best(call, setting === 'hot' ? t : 2 * t) / copies;
      if (name === 'bf16') bf16 = s;
      console.log(
        `  ${name.padEnd(34)} ${(s * 1e6).toFixed(1).padStart(8)} us  ${(bytes / s / 1e9).toFixed(1).padStart(6)} GB/s  x${(s / bf16).toFixed(2)} of bf16`,
      );
    }
  }
}
ctx.dispose();
