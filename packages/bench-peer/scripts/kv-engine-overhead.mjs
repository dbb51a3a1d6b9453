#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// What the engine-side KV features cost: prompt processing and decode speed of one GGUF model with
// `kvCacheRotation: 'hadamard'`, with the FP8 telemetry (`kvTelemetry`) and with sink/recent tokens kept in the model
// dtype (`kvCacheKeepSink` / `kvCacheKeepRecent`, `--keep S:R`, default 16:64), against the same KV dtype with none,
// rounds alternating, medians printed with the CPU ISA; then each feature's own work per decode step, timed alone
// (far less noisy than end-to-end differences on a shared machine). Both run in TypeScript, once per token.
//
//   pnpm --filter @kvq/bench-peer build
//   node packages/bench-peer/scripts/kv-engine-overhead.mjs --model /tmp/kvq-bench-peer/llama-768x12-q8_0.gguf
//        [--kv fp8_e4m3] [--prompt 512] [--decode 64] [--rounds 3] [--backend cpu] [--keep 16:64]
import { KvHadamardRotation, LLM } from '@kvq/engine';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const model = opt('model');
if (!model) {
  console.error('--model PATH is required (a GGUF or HF folder; bench-peer writes /tmp/kvq-bench-peer/*.gguf)');
  process.exit(2);
}
const kv = opt('kv', 'fp8_e4m3');
const promptLen = Number(opt('prompt', '512'));
const decode = Number(opt('decode', '64'));
const rounds = Number(opt('rounds', '3'));
const backend = opt('backend', 'cpu');
const [keepSink, keepRecent] = opt('keep', '16:64').split(':').map(Number);

const VARIANTS = {
  plain: { kvCacheRotation: 'none', kvTelemetry: false },
  hadamard: { kvCacheRotation: 'hadamard', kvTelemetry: false },
  telemetry: { kvCacheRotation: 'none', kvTelemetry: true },
  keep: { kvCacheRotation: 'none', kvTelemetry: false, kvCacheKeepSink: keepSink, kvCacheKeepRecent: keepRecent },
};
const open = (v) =>
  LLM.create({ model, kvCacheDtype: kv, ...v, backend, maxModelLen: promptLen + decode + 1, kvCacheMemory: 256 << 20, enablePrefixCaching: false, maxNumBatchedTokens: 512 });
const engines = {};
for (const [k, v] of Object.entries(VARIANTS)) engines[k] = await open(v);
const prompt = Array.from({ length: promptLen }, (_, i) => 100 + ((i * 7919) % 5000));

async function once(llm) {
  const t0 = performance.now();
  await llm.generate({ promptTokenIds: prompt }, { temperature: 0, maxTokens: 1, ignoreEos: true });
  const t1 = performance.now();
  await llm.generate({ promptTokenIds: prompt }, { temperature: 0, maxTokens: decode + 1, ignoreEos: true });
  const t2 = performance.now();
  return { pp: promptLen / ((t1 - t0) / 1000), tg: decode / ((t2 - t1 - (t1 - t0)) / 1000) };
}

const names = Object.keys(VARIANTS);
const results = Object.fromEntries(names.map((k) => [k, []]));
for (const k of names) await once(engines[k]); // warm-up
for (let r = 0; r < rounds; r++) for (const k of r % 2 === 0 ? names : [...names].reverse()) results[k].push(await once(engines[k]));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const isa = engines.plain.backend.info.simd ?? '?';
console.log(`${model}, KV ${kv}, backend ${engines.plain.backend.name} (ISA ${isa}), prompt ${promptLen}, decode ${decode}, ${rounds} rounds, ${new Date().toISOString().slice(0, 10)}\n`);
console.log('| variant | prompt tok/s | decode tok/s | prompt vs plain | decode vs plain |');
console.log('|---|---|---|---|---|');
const med = (k, f) => median(results[k].map(f));
for (const k of names) {
  console.log(`| ${k} | ${med(k, (x) => x.pp).toFixed(1)} | ${med(k, (x) => x.tg).toFixed(2)} | ${(med(k, (x) => x.pp) / med('plain', (x) => x.pp)).toFixed(3)}x | ${(med(k, (x) => x.tg) / med('plain', (x) => x.tg)).toFixed(3)}x |`);
}

// Each feature's own work per decode step, timed alone: every layer rotates q, k, v and un-rotates the attention
// output of one token; the telemetry counts one token's K and V in every layer (the telemetry engine's caches hold
// the prompt's and decode's tokens, so its reads are real cache bytes).
const c = engines.plain.model.config;
const stepMs = 1000 / med('plain', (x) => x.tg);
const timeIt = (label, fn) => {
  for (let i = 0; i < 200; i++) fn();
  const reps = 2000;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) fn();
  const ms = (performance.now() - t0) / reps;
  console.log(`${label} per decode step: ${(ms * 1000).toFixed(1)} us = ${((100 * ms) / stepMs).toFixed(2)}% of a ${stepMs.toFixed(2)} ms decode step`);
};
const rot = new KvHadamardRotation(c.headDim);
const q = Float32Array.from({ length: c.numHeads * c.headDim }, (_, i) => Math.sin(i));
const kvVec = Float32Array.from({ length: c.numKvHeads * c.headDim }, (_, i) => Math.cos(i) * 2);
timeIt('rotation', () => {
  for (let l = 0; l < c.numLayers; l++) {
    rot.rotate(q, c.numHeads);
    rot.rotate(kvVec, c.numKvHeads);
    rot.rotate(kvVec, c.numKvHeads);
    rot.unrotate(q, c.numHeads);
  }
});
const fwd = engines.telemetry.engine.forwardPass;
const slot = Int32Array.of(fwd.storage.blockSize + 3);
timeIt('telemetry', () => {
  for (let l = 0; l < c.numLayers; l++) fwd.kvTelemetry.observe(l, fwd.storage.layer(l), kvVec, kvVec, slot, 1);
});
for (const e of Object.values(engines)) e.dispose();
