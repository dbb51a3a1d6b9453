#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// KV-cache quality of kvq's KV dtypes on kvq-tiny with the method of docs/benchmarks.md's "Quality (kvq-tiny)"
// section (the held-out documents of qualityDocuments, 512-token documents, mean KL of each dtype's next-token
// distribution against the same engine's float32-KV run, top-1 agreement, NLL), on one backend. The write-time-scaled
// dtypes (int8_per_token_head, nvfp4, ...) run on the reference backend only for now, so that is the default.
// Prints a markdown table; no assertions (the engine tests check these dtypes; this measures them).
//
//   pnpm --filter @kvq/bench-peer build
//   node packages/bench-peer/scripts/kv-quant-quality.mjs [--positions 4096] [--backend reference]
//        [--dtypes fp8_e4m3,fp8_per_token_head,int8_per_token_head,int4_per_token_head,int4_g32,int4_g16,nvfp4]
//        (an entry K/V, e.g. int8_per_token_head/int4_g32_f16, stores V in another dtype: kvCacheValueDtype)
//        [--rotations none,hadamard]   (kvCacheRotation values; each dtype runs with each; default none)
//        [--calculate-kv-scales]   (also run each dtype with calculateKvScales: FP8 per-tensor and nvfp4 scales
//        from the first forward pass; rows marked "calc")
//        [--plan-budget B [--plan-dtypes a,b] [--plan-positions 1024]]   (adds a row per rotation: the automatic
//        per-layer plan of @kvq/calibrate measured on the calibration documents, at most B KV bytes per token)
//        [--plan-kv separate,same]   (the plan's K and V chosen separately, the default, and/or one dtype per layer)
//        [--keep S:R,S:R...]   (kvCacheKeepSink:kvCacheKeepRecent pairs; each dtype and rotation runs with each;
//        default 0:0, nothing kept)
//        [--pack]   (concatenate the held-out documents into sequences of the model's full 512 positions instead of
//        scoring each document alone: longer contexts, where kept tokens are a smaller share)
//        [--chunk N]   (tokens per forward pass while scoring, default 512: a whole document in one prefill; 1 scores
//        every position as a decode step, as generation sees the cache)
//
// 4096 positions take about 10 minutes on 2 cores with the reference backend.
import { planKvCacheLayers } from '@kvq/calibrate';
import { LLM, loadModel } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { logSoftmaxInto, QualityAccumulator, qualityDocuments } from '../dist/index.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const positions = Number(opt('positions', '4096'));
const backend = opt('backend', 'reference');
const dtypes = opt('dtypes', 'fp8_e4m3,fp8_per_token_head,int8_per_token_head,int4_per_token_head,int4_g32,int4_g16,nvfp4')
  .split(',')
  .filter(Boolean);
const rotations = opt('rotations', 'none').split(',').filter(Boolean);
const keeps = opt('keep', '0:0')
  .split(',')
  .filter(Boolean)
  .map((p) => {
    const [sink, recent] = p.split(':').map(Number);
    if (!Number.isInteger(sink) || !Number.isInteger(recent) || sink < 0 || recent < 0) {
      console.error(`--keep takes sink:recent pairs of integers >= 0, got ${JSON.stringify(p)}`);
      process.exit(2);
    }
    return { sink, recent };
  });
if (!Number.isInteger(positions) || positions < 1) {
  console.error(`--positions must be a positive integer, got ${JSON.stringify(opt('positions'))}`);
  process.exit(2);
}

const model = await loadModel(modelTinyPath);
const pack = args.includes('--pack');
const chunk = Number(opt('chunk', '512'));
if (!Number.isInteger(chunk) || chunk < 1 || chunk > 512) {
  console.error(`--chunk must be an integer in [1, 512], got ${JSON.stringify(opt('chunk'))}`);
  process.exit(2);
}
const held = qualityDocuments((t) => model.tokenizer.encode(t), model.config.maxPositionEmbeddings, pack ? 1 << 30 : positions);
const { calibrationTexts } = held;
let documents = held.documents;
if (pack) {
  // Whole 512-token sequences of consecutive held-out documents, until `positions` are scored.
  const seqLen = model.config.maxPositionEmbeddings;
  const packed = [];
  let cur = [];
  for (const d of held.documents) {
    cur.push(...d);
    while (cur.length >= seqLen && packed.length * (seqLen - 1) < positions) packed.push(cur.splice(0, seqLen));
  }
  documents = packed;
}
const vocab = model.config.vocabSize;
const open = (kv, kvCacheRotation = 'none', layers = undefined, calculateKvScales = false, keep = { sink: 0, recent: 0 }) => {
  const [kvCacheDtype, kvCacheValueDtype] = kv.split('/');
  const cache = layers
    ? { kvCacheLayerDtypes: layers.keys, ...(layers.values ? { kvCacheLayerValueDtypes: layers.values } : {}) }
    : { kvCacheDtype, ...(kvCacheValueDtype ? { kvCacheValueDtype } : {}) };
  return LLM.create({ model, ...cache, kvCacheRotation, calculateKvScales, kvCacheKeepSink: keep.sink, kvCacheKeepRecent: keep.recent, backend, maxModelLen: 513, kvCacheMemory: 64 << 20, blockSize: 16, enablePrefixCaching: false, maxNumSeqs: 1, maxNumBatchedTokens: chunk });
};

/** Calls each(doc, position, log-probabilities) for every scored position of every document. */
async function eachRow(llm, each) {
  const row = new Float64Array(vocab);
  for (const [d, tokens] of documents.entries()) {
    let pos = 0;
    await llm.score(tokens, (_first, logits, rows) => {
      for (let r = 0; r < rows; r++, pos++) {
        if (pos < tokens.length - 1) each(d, pos, logSoftmaxInto(logits.subarray(r * vocab, (r + 1) * vocab), row));
      }
    });
  }
}

const offsets = [];
let total = 0;
for (const t of documents) {
  offsets.push(total);
  total += t.length - 1;
}
const ref = new Float32Array(total * vocab);
const f32 = await open('float32');
let nll = 0;
await eachRow(f32, (d, pos, row) => {
  ref.set(row, (offsets[d] + pos) * vocab);
  nll -= row[documents[d][pos + 1]];
});
const lengths = documents.map((d) => d.length).sort((a, b) => a - b);
console.log(
  `kvq-tiny, ${documents.length} ${pack ? 'packed sequences' : 'documents'}, ${chunk === 512 ? 'each scored in one prefill' : `scored ${chunk} token(s) per step`} (${lengths[0]}-${lengths.at(-1)} tokens, median ${lengths[lengths.length >> 1]}), ${total} positions, backend ${f32.backend.name}, ${new Date().toISOString().slice(0, 10)}\n`,
);
console.log('| KV cache | bytes/token (kept tokens included) | NLL | KL vs float32 (nats) | top-1 |');
console.log('|---|---|---|---|---|');
console.log(`| float32 | ${f32.kvBytesPerToken} | ${(nll / total).toFixed(5)} | 0 | 100% |`);
const planBudget = opt('plan-budget');
const calcToo = args.includes('--calculate-kv-scales');
const rows = dtypes.flatMap((kv) =>
  rotations.flatMap((rotation) => keeps.flatMap((keep) => [{ kv, rotation, keep }, ...(calcToo ? [{ kv, rotation, keep, calc: true }] : [])])),
);
if (planBudget !== undefined) {
  // The plan is measured on the calibration documents (never the scored ones), at most --plan-positions positions.
  let left = Number(opt('plan-positions', '1024'));
  const sequences = [];
  for (const t of calibrationTexts) {
    if (left <= 1) break;
    const ids = model.tokenizer.encode(t).slice(0, Math.min(512, left + 1));
    if (ids.length < 2) continue;
    sequences.push(ids);
    left -= ids.length - 1;
  }
  const candidates = opt('plan-dtypes')?.split(',');
  for (const mode of opt('plan-kv', 'separate').split(',')) {
    for (const rotation of rotations) {
      const plan = await planKvCacheLayers({ model, sequences, kvBytesPerToken: Number(planBudget), ...(candidates ? { candidates } : {}), rotation, backend, separateKv: mode !== 'same' });
      const v = plan.layerValueDtypes;
      const names = plan.layerDtypes.map((k, l) => (v && v[l] !== k ? `${k}/${v[l]}` : k));
      rows.push({ kv: `plan ≤ ${planBudget} B, ${mode === 'same' ? 'one dtype per layer' : 'K and V separately'} (${names.join(', ')})`, rotation, layerDtypes: { keys: plan.layerDtypes, values: v } });
    }
  }
}
// Bytes per token of the model-dtype cache (what kept tokens cost on top of the quantized copy).
const modelKvBytes = keeps.some((k) => k.sink > 0 || k.recent > 0) ? (await open('auto')).kvBytesPerToken : 0;
/**
 * KV bytes per scored token with kept tokens: every document's cache when it is complete (each is scored in one
 * prefill), the quantized copy of every token plus the model-dtype copies of its sink and tail, over all documents.
 */
function effectiveBytes(llm) {
  const k = llm.kvCacheKeep;
  if (!k) return llm.kvBytesPerToken;
  const bs = 16;
  let bytes = 0;
  let tokens = 0;
  for (const d of documents) {
    const L = d.length;
    const t = k.recentTokens === 0 ? Math.max(k.sinkTokens, L) : Math.max(k.sinkTokens, Math.floor(Math.max(0, L - k.recentTokens) / bs) * bs);
    const kept = Math.min(L, k.sinkTokens) + Math.max(0, L - t);
    bytes += llm.kvBytesPerToken * L + modelKvBytes * kept;
    tokens += L;
  }
  return Math.round(bytes / tokens);
}
for (const { kv, rotation, layerDtypes, calc, keep } of rows) {
  const llm = await open(kv, rotation, layerDtypes, calc === true, keep);
  const k = llm.kvCacheKeep;
  const kept = k ? ` + keep sink ${k.sinkTokens}, recent ${k.recentTokens}` : '';
  const acc = new QualityAccumulator();
  await eachRow(llm, (d, pos, row) => acc.add(ref.subarray((offsets[d] + pos) * vocab, (offsets[d] + pos + 1) * vocab), row, documents[d][pos + 1], vocab));
  const r = acc.result();
  console.log(`| ${kv}${rotation === 'none' ? '' : ` + ${rotation}`}${kept}${calc ? ' (calc scales)' : ''} | ${effectiveBytes(llm)} | ${r.nllMean.toFixed(5)} | ${r.klMean.toExponential(2)} | ${(r.top1Agreement * 100).toFixed(2)}% |`);
}
