#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// What `kvCacheRotation: 'hadamard'` costs: prompt processing and decode speed of one GGUF model with and without
// the rotation (same KV dtype, same backend), rounds alternating, medians printed with the CPU ISA. The rotation
// runs in the engine (TypeScript), so this is the number to watch if it ever moves into the kernels.
//
//   pnpm --filter @kvq/bench-peer build
//   node packages/bench-peer/scripts/kv-rotation-overhead.mjs --model /tmp/kvq-bench-peer/llama-768x12-q8_0.gguf
//        [--kv fp8_e4m3] [--prompt 512] [--decode 64] [--rounds 3] [--backend cpu]
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

const open = (kvCacheRotation) =>
  LLM.create({ model, kvCacheDtype: kv, kvCacheRotation, backend, maxModelLen: promptLen + decode + 1, kvCacheMemory: 256 << 20, enablePrefixCaching: false, maxNumBatchedTokens: 512 });
const engines = { none: await open('none'), hadamard: await open('hadamard') };
const prompt = Array.from({ length: promptLen }, (_, i) => 100 + ((i * 7919) % 5000));

async function once(llm) {
  const t0 = performance.now();
  await llm.generate({ promptTokenIds: prompt }, { temperature: 0, maxTokens: 1, ignoreEos: true });
  const t1 = performance.now();
  await llm.generate({ promptTokenIds: prompt }, { temperature: 0, maxTokens: decode + 1, ignoreEos: true });
  const t2 = performance.now();
  return { pp: promptLen / ((t1 - t0) / 1000), tg: decode / ((t2 - t1 - (t1 - t0)) / 1000) };
}

const results = { none: [], hadamard: [] };
await once(engines.none); // warm-up
await once(engines.hadamard);
for (let r = 0; r < rounds; r++) for (const k of r % 2 === 0 ? ['none', 'hadamard'] : ['hadamard', 'none']) results[k].push(await once(engines[k]));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const isa = engines.none.backend.info.simd ?? '?';
console.log(`${model}, KV ${kv}, backend ${engines.none.backend.name} (ISA ${isa}), prompt ${promptLen}, decode ${decode}, ${rounds} rounds, ${new Date().toISOString().slice(0, 10)}\n`);
console.log('| rotation | prompt tok/s | decode tok/s |');
console.log('|---|---|---|');
for (const k of ['none', 'hadamard']) console.log(`| ${k} | ${median(results[k].map((x) => x.pp)).toFixed(1)} | ${median(results[k].map((x) => x.tg)).toFixed(2)} |`);
const ratio = (f) => median(results.hadamard.map(f)) / median(results.none.map(f));
console.log(`\nhadamard / none: prompt ${ratio((x) => x.pp).toFixed(3)}x, decode ${ratio((x) => x.tg).toFixed(3)}x`);
// The rotation's own work per decode step, timed alone (less noisy than the end-to-end difference): every layer
// rotates q, k, v and un-rotates the attention output of one token.
const c = engines.none.model.config;
const rot = new KvHadamardRotation(c.headDim);
const q = Float32Array.from({ length: c.numHeads * c.headDim }, (_, i) => Math.sin(i));
const kvVec = Float32Array.from({ length: c.numKvHeads * c.headDim }, (_, i) => Math.cos(i));
const step = () => {
  for (let l = 0; l < c.numLayers; l++) {
    rot.rotate(q, c.numHeads);
    rot.rotate(kvVec, c.numKvHeads);
    rot.rotate(kvVec, c.numKvHeads);
    rot.unrotate(q, c.numHeads);
  }
};
for (let i = 0; i < 200; i++) step();
const reps = 2000;
const t0 = performance.now();
for (let i = 0; i < reps; i++) step();
const perStepMs = (performance.now() - t0) / reps;
const stepMs = 1000 / median(results.none.map((x) => x.tg));
console.log(`rotation work per decode step: ${(perStepMs * 1000).toFixed(1)} us = ${((100 * perStepMs) / stepMs).toFixed(2)}% of a ${stepMs.toFixed(2)} ms decode step`);
for (const e of Object.values(engines)) e.dispose();
