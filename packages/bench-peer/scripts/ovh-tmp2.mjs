import { LLM } from '@kvq/engine';
const mode = process.argv[2];
const llm = await LLM.create({ model: '/tmp/kvq-bench-peer/llama-768x12-q8_0.gguf', kvCacheDtype: 'fp8_e4m3', backend: 'cpu', maxModelLen: 1024, kvCacheMemory: 64 << 20, enablePrefixCaching: false });
const prompt = Array.from({ length: 32 }, (_, i) => 100 + ((i * 7919) % 5000));
const params = mode === 'greedy' ? { temperature: 0, ignoreEos: true } : mode === 'topk' ? { temperature: 0.8, topP: 0.95, topK: 50, seed: 1, ignoreEos: true } : { temperature: 0.8, topP: 0.95, seed: 1, ignoreEos: true };
const eng = llm.engine;
const T = {};
const wrap = (obj, name, label) => { const f = obj[name]; obj[name] = function (...a) { const t0 = performance.now(); try { return f.apply(this, a); } finally { T[label] = (T[label] ?? 0) + performance.now() - t0; } }; };
wrap(eng.forwardPass, 'forward', 'forward'); wrap(eng.forwardPass, 'forwardArgmax', 'forward');
wrap(eng.runner, 'execute', 'execute');
wrap(eng.sampler, 'sample', 'sample');
wrap(Object.getPrototypeOf(eng), 'checkStop', 'checkStop');
wrap(Object.getPrototypeOf(eng), 'appendToken', 'appendToken');
wrap(Object.getPrototypeOf(eng), 'collect', 'collect');
wrap(eng.sched, 'schedule', 'schedule'); wrap(llm.backend, 'sampleBuckets', 'pass');
wrap(Object.getPrototypeOf(eng), 'step', 'step');
let total = 0, steps = 0;
for (let r = 0; r < 5; r++) {
  if (r === 1) { for (const k in T) T[k] = 0; }
  const t0 = performance.now();
  if (mode === 'stream') { for await (const d of llm.stream(prompt.map(() => 'a').join(''), { ...params, maxTokens: 256 })) {} }
  else await llm.generate({ promptTokenIds: prompt }, { ...params, maxTokens: 257 });
  if (r >= 1) { total += performance.now() - t0; steps += 256; }
}
console.log(mode, 'per step us: total', (1000*total/steps).toFixed(1), Object.entries(T).map(([k,v])=>`${k} ${(1000*v/steps).toFixed(1)}`).join(', '));
llm.dispose();
