import { resolveSamplingParams, sampleToken, SeededRng } from '@kvq/engine';
const v = 32000;
const logits = Float32Array.from({ length: v }, (_, i) => Math.sin(i * 12.9898) * 8);
const params = resolveSamplingParams({ temperature: 0.8, topP: 0.95 });
const rng = new SeededRng(1);
for (let i = 0; i < 50; i++) sampleToken(logits, params, rng);
const t0 = performance.now();
for (let i = 0; i < 500; i++) sampleToken(logits, params, rng);
console.log(((performance.now() - t0) / 500).toFixed(3), 'ms');
