#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Decode speed with each layer's q/k/v and gate/up run as one linear call over their stacked rows (the engine's
// default, `stackProjections`) against one call per projection, in one process: two engines on the same GGUF file,
// alternated round by round (first one, then the other, swapping the order each round), greedy decoding of the same
// prompt; prints the per-round ms per token, the medians, their ratio and whether the tokens were the same.
//
//   pnpm --filter @kvq/bench-peer build
//   chrt -r 1 node packages/bench-peer/scripts/stacked-projections.mjs --model /tmp/kvq-bench-peer/llama-768x12-q8_0.gguf [--tokens 128] [--rounds 6]
import { LLM } from '@kvq/engine';

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
const tokens = Number(opt('tokens', '128'));
const rounds = Number(opt('rounds', '6'));
const create = (stackProjections) =>
  LLM.create({ model, kvCacheDtype: opt('kv', 'fp8_e4m3'), backend: 'cpu', maxModelLen: 2048, kvCacheMemory: 256 << 20, enablePrefixCaching: false, stackProjections });
const engines = { stacked: await create(true), separate: await create(false) };
const prompt = Array.from({ length: 32 }, (_, i) => 100 + ((i * 7919) % 5000));
const ms = { stacked: [], separate: [] };
const ids = {};
for (let r = 0; r < rounds; r++) {
  for (const name of r % 2 ? ['separate', 'stacked'] : ['stacked', 'separate']) {
    const llm = engines[name];
    await llm.generate({ promptTokenIds: prompt }, { temperature: 0, maxTokens: 2 }); // warm: prefill and first steps
    const t0 = performance.now();
    const [out] = await llm.generate({ promptTokenIds: prompt }, { temperature: 0, maxTokens: tokens, ignoreEos: true });
    ms[name].push((performance.now() - t0) / tokens);
    ids[name] = out.outputs[0].tokenIds.join(',');
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
console.log(`${model}, ${tokens} tokens a round, ${rounds} rounds, CPU backend ISA ${engines.stacked.backend.info.simd ?? '?'}, ${new Date().toISOString().slice(0, 10)}`);
for (const name of ['stacked', 'separate']) console.log(`${name.padEnd(9)} ms/token ${ms[name].map((x) => x.toFixed(2)).join(' ')} (median ${median(ms[name]).toFixed(3)})`);
console.log(`stacked / separate: ${(median(ms.stacked) / median(ms.separate)).toFixed(3)}; same tokens: ${ids.stacked === ids.separate}`);
for (const llm of Object.values(engines)) llm.dispose();
