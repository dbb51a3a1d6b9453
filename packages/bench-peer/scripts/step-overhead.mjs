#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Per-token overhead outside the forward pass (issue "Fast on the CPUs people have", item 4): a real engine decodes
// with one GGUF model while the forward pass is timed from inside, so step time - forward time = scheduling, sampling,
// detokenizing, stop checks and the event-loop yields of `LLM.generate` / `LLM.stream`. Then the sampler alone over
// vocabularies of 32k-262k (Llama 2/3, Qwen3 and Gemma 3 sizes), as a share of the same decode step.
//
//   pnpm --filter @kvq/bench-peer build
//   node packages/bench-peer/scripts/step-overhead.mjs --model /tmp/kvq-bench-peer/llama-768x12-q8_0.gguf [--kv fp8_e4m3] [--tokens 128] [--warmup 2048]
import { LLM, resolveSamplingParams, sampleToken, SeededRng } from '@kvq/engine';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const model = opt('model');
if (!model) {
  console.error('--model PATH is required');
  process.exit(2);
}
const kv = opt('kv', 'fp8_e4m3');
const tokens = Number(opt('tokens', '128'));
const llm = await LLM.create({ model, kvCacheDtype: kv, backend: opt('backend', 'cpu'), maxModelLen: 1024, kvCacheMemory: 64 << 20, enablePrefixCaching: false });
const fwd = llm.engine.forwardPass;
let forwardMs = 0;
// Plain greedy steps run forwardArgmax (the backend's argmax kernel picks the token), the others forward.
for (const name of ['forward', 'forwardArgmax']) {
  const inner = fwd[name].bind(fwd);
  fwd[name] = (...callArgs) => {
    const t0 = performance.now();
    const out = inner(...callArgs);
    forwardMs += performance.now() - t0;
    return out;
  };
}
const prompt = Array.from({ length: 32 }, (_, i) => 100 + ((i * 7919) % 5000));

/** Decode `tokens` tokens after the prompt; returns ms per decode step and the share outside the forward pass. */
async function run(label, params, streaming) {
  // Prefill first, so its (large) forward does not mix into the decode numbers.
  await llm.generate({ promptTokenIds: prompt }, { ...params, maxTokens: 1 });
  forwardMs = 0;
  const t0 = performance.now();
  if (streaming) {
    let n = 0;
    for await (const d of llm.stream(prompt.map(() => 'a').join(''), { ...params, maxTokens: tokens })) n += d.text.length >= 0 ? 1 : 0;
  } else {
    await llm.generate({ promptTokenIds: prompt }, { ...params, maxTokens: tokens + 1 });
  }
  const total = performance.now() - t0;
  return { label, stepMs: total / tokens, outside: 1 - forwardMs / total };
}

const cases = [
  ['greedy, generate()', { temperature: 0, ignoreEos: true }, false],
  ['T 0.8, top-p 0.95, top-k 50, generate()', { temperature: 0.8, topP: 0.95, topK: 50, seed: 1, ignoreEos: true }, false],
  ['T 0.8, top-p 0.95, stream() with detokenizing', { temperature: 0.8, topP: 0.95, seed: 1, ignoreEos: true }, true],
];
// Two rounds from a fresh process (its first tokens: V8 has not optimized the once-a-token JavaScript yet), then two
// after --warmup tokens of each case (a server's steady state; 0 skips them).
const rows = [];
const warmup = Number(opt('warmup', '2048'));
for (let r = 0; r < 2; r++) for (const [label, params, streaming] of cases) rows.push(await run(`${label}, fresh process`, params, streaming));
if (warmup > 0) {
  for (const [, params, streaming] of cases) for (let done = 0; done < warmup; done += tokens) await run('', params, streaming);
  for (let r = 0; r < 2; r++) for (const [label, params, streaming] of cases) rows.push(await run(`${label}, after warm-up`, params, streaming));
}
const vocab = llm.model.config.vocabSize;
console.log(`${model}, KV ${kv}, backend ${llm.backend.name} (ISA ${llm.backend.info.simd ?? '?'}), vocabulary ${vocab}, ${tokens} tokens, warm-up ${warmup} tokens a case, ${new Date().toISOString().slice(0, 10)}\n`);
console.log('| decode | ms per step | outside the forward pass |');
console.log('|---|---|---|');
for (const x of rows) console.log(`| ${x.label} | ${x.stepMs.toFixed(2)} | ${(100 * x.outside).toFixed(2)}% |`);
const stepMs = Math.min(...rows.map((x) => x.stepMs));
console.log(`\nsampler alone, as a share of a ${stepMs.toFixed(2)} ms step (flat: logits uniform in [-8, 8], as a random-weight`);
console.log('model gives; peaked: Zipf-like logits -1.5 ln(rank), closer to a trained model):');
// The engine draws with the backend's native sampleDraw when it has one (the CPU backend); the reference draw
// (TypeScript, the same tokens) is timed beside it.
const be = llm.backend;
const native = be.sampleDraw ? { draw: (a) => be.sampleDraw(a) } : undefined;
console.log(`draw: ${native ? `native (${be.name})` : 'reference only (this backend has no sampleDraw)'} / reference`);
console.log('| vocabulary | logits | greedy | T 0.8, top-p 0.95 | T 0.8, top-p 0.95, top-k 50 |');
console.log('|---|---|---|---|---|');
for (const [v, shape] of [32000, 128256, 151936, 262144].flatMap((v) => [[v, 'flat'], [v, 'peaked']])) {
  const logits = Float32Array.from({ length: v }, (_, i) => (shape === 'flat' ? Math.sin(i * 12.9898) * 8 : -1.5 * Math.log(1 + ((i * 2654435761) % v))));
  const timeWith = (p, pass) => {
    const params = resolveSamplingParams(p);
    const rng = new SeededRng(1);
    // Warm up (JIT), then the median of 7 batches of 30 draws: single batches on this shared machine varied 3x.
    for (let i = 0; i < 60; i++) sampleToken(logits, params, rng, pass);
    const batches = [];
    for (let b = 0; b < 7; b++) {
      const t0 = performance.now();
      for (let i = 0; i < 30; i++) sampleToken(logits, params, rng, pass);
      batches.push((performance.now() - t0) / 30);
    }
    const ms = batches.sort((x, y) => x - y)[3];
    return `${ms.toFixed(3)} ms (${((100 * ms) / stepMs).toFixed(1)}%)`;
  };
  const time = (p) => (p.temperature === 0 || !native ? timeWith(p) : `${timeWith(p, native)} / ${timeWith(p)}`);
  console.log(`| ${v} | ${shape} | ${time({ temperature: 0 })} | ${time({ temperature: 0.8, topP: 0.95 })} | ${time({ temperature: 0.8, topP: 0.95, topK: 50 })} |`);
}
llm.dispose();
