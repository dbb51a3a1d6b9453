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
//        [--rotations none,hadamard]   (kvCacheRotation values; each dtype runs with each; default none)
//        [--calculate-kv-scales]   (also run each dtype with calculateKvScales: FP8 per-tensor and nvfp4 scales
//        from the first forward pass; rows marked "calc")
//        [--plan-budget B [--plan-dtypes a,b] [--plan-positions 1024]]   (adds a row per rotation: the automatic
//        per-layer plan of @kvq/calibrate measured on the calibration documents, at most B KV bytes per token)
//        [--keep S:R,S:R...]   (kvCacheKeepSink:kvCacheKeepRecent pairs; each dtype and rotation runs with each;
//        default 0:0, nothing kept)
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
const { documents, calibrationTexts } = qualityDocuments((t) => model.tokenizer.encode(t), model.config.maxPositionEmbeddings, positions);
const vocab = model.config.vocabSize;
const open = (kvCacheDtype, kvCacheRotation = 'none', kvCacheLayerDtypes = undefined, calculateKvScales = false, keep = { sink: 0, recent: 0 }) =>
  LLM.create({ model, ...(kvCacheLayerDtypes ? { kvCacheLayerDtypes } : { kvCacheDtype }), kvCacheRotation, calculateKvScales, kvCacheKeepSink: keep.sink, kvCacheKeepRecent: keep.recent, backend, maxModelLen: 513, kvCacheMemory: 64 << 20, blockSize: 16, enablePrefixCaching: false, maxNumSeqs: 1, maxNumBatchedTokens: 512 });

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
console.log(`kvq-tiny, ${documents.length} documents, ${total} positions, backend ${f32.backend.name}, ${new Date().toISOString().slice(0, 10)}\n`);
console.log('| KV cache | bytes/token | NLL | KL vs float32 (nats) | top-1 |');
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
  for (const rotation of rotations) {
    const plan = await planKvCacheLayers({ model, sequences, kvBytesPerToken: Number(planBudget), ...(candidates ? { candidates } : {}), rotation, backend });
    rows.push({ kv: `plan ≤ ${planBudget} B (${plan.layerDtypes.join(', ')})`, rotation, layerDtypes: plan.layerDtypes });
  }
}
for (const { kv, rotation, layerDtypes, calc, keep } of rows) {
  const llm = await open(kv, rotation, layerDtypes, calc === true, keep);
  const k = llm.kvCacheKeep;
  // Kept tokens per sequence at most: the sink's blocks and the tail (recent + up to a block).
  const kept = k ? ` + keep sink ${k.sinkTokens}, recent ${k.recentTokens} (≤ ${k.sinkTokens + (k.recentTokens > 0 ? k.recentTokens + 15 : 0)} tokens/seq also in bf16)` : '';
  const acc = new QualityAccumulator();
  await eachRow(llm, (d, pos, row) => acc.add(ref.subarray((offsets[d] + pos) * vocab, (offsets[d] + pos + 1) * vocab), row, documents[d][pos + 1], vocab));
  const r = acc.result();
  console.log(`| ${kv}${rotation === 'none' ? '' : ` + ${rotation}`}${kept}${calc ? ' (calc scales)' : ''} | ${llm.kvBytesPerToken} | ${r.nllMean.toFixed(5)} | ${r.klMean.toExponential(2)} | ${(r.top1Agreement * 100).toFixed(2)}% |`);
}
