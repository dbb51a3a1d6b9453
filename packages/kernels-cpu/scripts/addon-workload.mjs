// SPDX-License-Identifier: Apache-2.0
//
// A fixed, deterministic workload on one kvq_cpu.node, printed as JSON: FP8 encode/decode (e4m3fn, e5m2,
// scaled, satfinite and not), the raw FP8 encoder over 65536 float32 bit patterns, an f32 GEMM with bias and a
// bf16 GEMV, quantized-weight GEMV/GEMM/embedding, the sampling vocabulary pass and a mixed K/V precision cache
// (reshapeAndCache + pagedAttention), all on the portable scalar kernels with one thread so that two builds of the
// same source (x64 and arm64) must agree bit for bit. qemu-arm64-check.mjs runs it on both and compares; wine-win64-check.mjs runs it
// on the win32 binary (in node.exe under wine) and the Linux one, also with the SIMD kernels and several threads
// (two builds for the same ISA must agree bit for bit too: same source, same thread partitioning).
//
// Usage: node addon-workload.mjs <path/to/kvq_cpu.node> [isa (default scalar)] [threads (default 1)]
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';

const path = process.argv[2];
if (!path) {
  process.stderr.write('usage: node addon-workload.mjs <path/to/kvq_cpu.node> [isa] [threads]\n');
  process.exit(2);
}
const addon = createRequire(import.meta.url)(path);
const isa = process.argv[3] ?? 'scalar';
const threads = Number(process.argv[4] ?? 1);
const ctx = new addon.Context(threads, isa, 0);

// xorshift32: the same inputs on every machine.
let s = 0x9e3779b9;
const rand = () => {
  s ^= s << 13;
  s ^= s >>> 17;
  s ^= s << 5;
  return (s >>> 0) / 4294967296;
};
const floats = (n, mag) => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * mag);

const results = {};
const bytes = (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const record = (name, a) => {
  results[name] = { sha256: createHash('sha256').update(bytes(a)).digest('hex'), first: Array.from(a.subarray(0, 4)), data: Buffer.from(bytes(a)).toString('base64') };
};

// FP8 quantize / dequantize, 4099 values (not a multiple of any vector width), values beyond the format's range
// included (satfinite clamps them), per-tensor scale.
const n = 4099;
const x = floats(n, 600);
x[0] = 1e9; x[1] = -1e9; x[2] = 0; x[3] = -0; x[4] = 1e-12;
for (const [fmtName, fmt] of [['e4m3fn', 0], ['e5m2', 1]]) {
  for (const sat of [true, false]) {
    const q = new Uint8Array(n);
    ctx.quantizeFp8(x, q, n, new Float32Array([0.75]), n, 0, fmt, sat);
    record(`quantize_${fmtName}_${sat ? 'satfinite' : 'nosat'}`, q);
    const d = new Float32Array(n);
    ctx.dequantizeFp8(q, d, n, new Float32Array([0.75]), n, 0, fmt);
    record(`dequantize_${fmtName}_${sat ? 'satfinite' : 'nosat'}`, d);
  }
  const codes = new Uint8Array(65536);
  ctx.encodeFp8Bits(0x3c000000, 65536, codes, fmt, true);
  record(`encode_bits_${fmtName}`, codes);
}

// GEMM y = x W^T + b, f32, awkward shapes; and a bf16 GEMV (one row, the decode shape).
{
  const rows = 3, inF = 67, outF = 33;
  const out = new Float32Array(rows * outF);
  ctx.linear(floats(rows * inF, 1), rows, floats(outF * inF, 0.5), 0, outF, inF, null, null, 0, floats(outF, 0.1), out, 0, 0);
  record('linear_f32_3x67x33', out);
}
{
  const inF = 256, outF = 17;
  const w = new Uint16Array(outF * inF);
  const wf = floats(outF * inF, 0.5);
  const wb = new Uint32Array(wf.buffer);
  for (let i = 0; i < w.length; i++) w[i] = wb[i] >>> 16; // bf16 = the top half of the float32 bits
  const out = new Float32Array(outF);
  ctx.linear(floats(inF, 1), 1, w, 1, outF, inF, null, null, 0, null, out, 0, 0);
  record('gemv_bf16_1x256x17', out);
}
if (threads > 1) {
  // Large enough to be split across the thread pool (the shapes above run on the calling thread).
  const rows = 8, inF = 512, outF = 1024;
  const out = new Float32Array(rows * outF);
  ctx.linear(floats(rows * inF, 1), rows, floats(outF * inF, 0.5), 0, outF, inF, null, null, 0, null, out, 0, 0);
  record(`linear_f32_${rows}x${inF}x${outF}_threads`, out);
}
// Quantized weights in their stored form (GGML blocks with finite f16 scales, compressed-tensors int4 with zero
// points and fp8 with per-row scales): GEMV (1 row), GEMM (6 rows, the dequantized panel) and embedding rows.
{
  const randomBytes = (len) => Uint8Array.from({ length: len }, () => Math.floor(rand() * 256));
  // [name, code, block elements, block bytes, f16 offsets, row length (default two blocks)]. The 256-element rows of
  // 32-element types take the AVX-512 VNNI decode GEMV's four-block dot (rows of whole 128-element groups).
  const ggml = [
    ['q4_0', 17, 32, 18, [0]],
    ['q5_1', 20, 32, 24, [0, 2]],
    ['q4_1_k256', 18, 32, 20, [0, 2], 256],
    ['q5_0_k256', 19, 32, 22, [0], 256],
    ['q4_k', 21, 256, 144, [0, 2]],
    ['q6_k', 23, 256, 210, [208]],
  ];
  const weights = [];
  for (const [name, code, elems, blockBytes, f16At, k] of ggml) {
    const outF = 5, inF = k ?? 2 * elems;
    const data = randomBytes(outF * (inF / elems) * blockBytes);
    const view = new DataView(data.buffer);
    for (let b = 0; b < data.length / blockBytes; b++) for (const o of f16At) view.setUint16(b * blockBytes + o, 0x2000 + Math.floor(rand() * 0x800), true);
    weights.push([name, [data, code, outF, inF, null, null, 0]]);
  }
  {
    const outF = 5, inF = 40, gs = 20;
    const zp = Int8Array.from({ length: outF * 2 }, () => Math.floor(rand() * 16) - 8);
    weights.push(['int4_g20_zp', [randomBytes((outF * inF) / 2), 26, outF, inF, floats(outF * 2, 0.1).map(Math.abs), zp, gs]]);
    // int4 groups of whole vectors: widened nibbles (g32; NEON and AVX2 also g128), table permutes (g128, AVX-512).
    for (const [g, k, withZp] of [[32, 64, true], [128, 256, false]]) {
      const z = withZp ? Int8Array.from({ length: outF * (k / g) }, () => Math.floor(rand() * 16) - 8) : null;
      weights.push([`int4_g${g}${withZp ? '_zp' : ''}`, [randomBytes((outF * k) / 2), 26, outF, k, floats(outF * (k / g), 0.1).map(Math.abs), z, g]]);
    }
    const codes = randomBytes(outF * inF).map((c) => ((c & 0x7f) === 0x7f ? 0x38 : c));
    weights.push(['fp8_e4m3', [codes, 24, outF, inF, floats(outF, 0.1).map(Math.abs), null, 0]]);
    // int8 per channel, K = 200 (the AVX-512 masked tail, AVX2's scalar tail).
    const i8 = Int8Array.from(randomBytes(outF * 200), (b) => b - 128);
    weights.push(['int8', [i8, 25, outF, 200, floats(outF, 0.1).map(Math.abs), null, 0]]);
  }
  for (const [name, w] of weights) {
    const [, , outF, inF] = w;
    for (const rows of [1, 6]) {
      const out = new Float32Array(rows * outF);
      ctx.linear(floats(rows * inF, 1), rows, ...w, null, out, 0, 0);
      record(`linear_${name}_${rows}x${inF}x${outF}`, out);
      // GGML weights: also with GGML's 8-bit activations (act_q8.h), the int8 dot products on the SIMD ISAs.
      if (w[1] >= 16 && w[1] <= 23) {
        const outQ8 = new Float32Array(rows * outF);
        ctx.linear(floats(rows * inF, 1), rows, ...w, null, outQ8, 1, 0);
        record(`linear_${name}_q8act_${rows}x${inF}x${outF}`, outQ8);
      }
      // int8 weights (W8A8): int8 activations per row (dynamic) and with a static scale.
      if (w[1] === 25) {
        for (const [tag, s] of [['dyn', 0], ['static', 0.02]]) {
          const outI8 = new Float32Array(rows * outF);
          ctx.linear(floats(rows * inF, 1), rows, ...w, null, outI8, 1, s);
          record(`linear_${name}_i8act_${tag}_${rows}x${inF}x${outF}`, outI8);
        }
      }
    }
    const ids = Int32Array.of(4, 0, 2);
    const emb = new Float32Array(3 * inF);
    ctx.embedding(...w, ids, emb, 3);
    record(`embedding_${name}`, emb);
  }
}
// The sampling vocabulary passes (sample_buckets.h): bucket masses, count / total / max / floor, the listed ids and
// weights of every candidate and of the most likely bucket, and the tokens a draw picks (sample_draw.h), over 5000 logits with NaN, -Infinity and a tie; a wide
// pass, a caller floor with a 300-nat range, top-k 40 (the k-th largest found in the pass) and a min weight.
{
  const n = 5000;
  const logits = floats(n, 12);
  logits[7] = NaN;
  logits[11] = -Infinity;
  logits[13] = logits[14];
  for (const [label, temperature, lower, pruneNats, topK, minWeight] of [
    ['t0.8', 0.8, -Infinity, Math.log(n) + 28, 0, 0],
    ['t0.04_floor', 0.04, 3, Infinity, 0, 0],
    ['t1_topk40', 1, -Infinity, Infinity, 40, 0],
    ['t0.7_minw', 0.7, -Infinity, 5, 0, 0.02],
  ]) {
    const mass = new Float64Array(1376); // @kvq/kernels SAMPLE_BUCKETS
    const r = new Float64Array(4);
    ctx.sampleBuckets(logits, temperature, lower, pruneNats, topK, minWeight, mass, r);
    for (const [name, a] of [['mass', mass], ['result', r]]) record(`sample_buckets_${label}_${name}`, a);
    const first = mass.findIndex((m) => m > 0);
    for (const bucket of [-1, first]) {
      const ids = new Int32Array(n);
      const weight = new Float64Array(n);
      const count = ctx.sampleBucketIds(logits, temperature, r[2], r[3], minWeight, bucket, ids, weight);
      record(`sample_bucket_ids_${label}_${bucket}`, Float64Array.of(count, ...ids.subarray(0, count), ...Array.from(ids.subarray(0, count), (i) => weight[i])));
    }
    // The token drawn (sample_draw.h) by 48 uniform draws, without and with top-p's cut, on the same settings (no caller
    // floor in a draw: the first setting's stands in for it with a 0.04 temperature).
    for (const topP of [1, 0.9]) {
      const tokens = Float64Array.from({ length: 48 }, (_, d) => ctx.sampleDraw(logits, temperature, topK, topP, minWeight, pruneNats, d === 0 ? 0 : d === 1 ? 1 - 2 ** -53 : (d * 0.6180339887498949) % 1));
      record(`sample_draw_${label}_p${topP}`, tokens);
    }
  }
}
// A mixed K/V precision cache (ops.h KvCacheRef.vdtype; the packed dtype code kCode | ((vCode + 1) << 8)): K
// int8_per_token_head (code 33), V int4_g32_f16 (code 40). reshapeAndCache writes each pool with its own dtype's
// writer, then pagedAttention reads it (each tile's K and V rows dequantized by their own decoders): a decode and a
// prefill sequence over blocks in scattered order, GQA 2, head size 64.
{
  const blockSize = 16, numKvHeads = 2, headSize = 64, numHeads = 4, numBlocks = 6;
  const rows = blockSize * numKvHeads;
  const ceil4 = (b) => Math.ceil(b / 4) * 4;
  // kv_quant_layout: a block's codes, then its scales (float32 per row; f16 per 32 values), each padded to 4 bytes.
  const blockBytes = (codeBytesPerRow, scaleBytesPerRow) => ceil4(ceil4(rows * codeBytesPerRow) + rows * scaleBytesPerRow);
  const kPool = new Uint8Array(numBlocks * blockBytes(headSize, 4));
  const vPool = new Uint8Array(numBlocks * blockBytes(headSize / 2, (headSize / 32) * 2));
  const code = 33 | ((40 + 1) << 8);
  const one = Float32Array.of(1);
  const seqLens = Int32Array.of(21, 9);
  const blockTables = Int32Array.of(4, 1, 3, 0); // two blocks per sequence (sequence 1 uses one)
  const slots = [];
  seqLens.forEach((len, sq) => {
    for (let p = 0; p < len; p++) slots.push(blockTables[sq * 2 + Math.floor(p / blockSize)] * blockSize + (p % blockSize));
  });
  const numTokens = slots.length;
  ctx.reshapeAndCache(floats(numTokens * numKvHeads * headSize, 2), floats(numTokens * numKvHeads * headSize, 2), Int32Array.from(slots), numTokens, code, kPool, vPool, numBlocks, blockSize, numKvHeads, headSize, one, one);
  record('kv_mixed_int8_per_token_head_k_pool', kPool);
  record('kv_mixed_int4_g32_f16_v_pool', vPool);
  const queryStartLoc = Int32Array.of(0, 1, 10); // sequence 0 decodes one token, sequence 1 prefills all nine
  const out = new Float32Array(10 * numHeads * headSize);
  ctx.pagedAttention(floats(out.length, 1), out, code, kPool, vPool, numBlocks, blockSize, numKvHeads, headSize, one, one, queryStartLoc, seqLens, blockTables, 2, 2, numHeads, 0.125, 0, 0, one, null);
  record('kv_mixed_attention_int8_per_token_head_int4_g32_f16', out);
}
ctx.dispose();
process.stdout.write(`${JSON.stringify({ arch: process.arch, platform: process.platform, abi: addon.abi, isa, threads, cpuInfo: addon.cpuInfo(), results })}\n`);
