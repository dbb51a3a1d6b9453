/**
 * `ggmlActivations`: on a GGUF with GGML-quantized weights (kvq-tiny as Q4_K_M) the default `'q8'` rounds the
 * activations as llama.cpp does, `'f32'` does not; both reach the kernels (the scores differ), both stay close to
 * each other, and a bad value is a typed error.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../load/load-model.js';
import { quantizeModel } from '../quantize/quantize.js';
import { engineErrorOfAsync, tempDir, testData } from '../testing/fixtures.js';
import { LLM } from './llm.js';

const PROMPT = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.';
let file: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  let dir: string;
  ({ dir, cleanup } = await tempDir('kvq-ggml-act-'));
  file = join(dir, 'kvq-tiny-q4_k_m.gguf');
  await quantizeModel(await loadModel(testData.kvqTiny), file, 'q4_k_m');
}, 120_000);
afterAll(async () => {
  await cleanup?.();
});

async function scores(ggmlActivations?: 'q8' | 'f32'): Promise<readonly number[]> {
  const llm = await LLM.create({ model: file, backend: 'reference', kvCacheMemory: 2 << 20, ...(ggmlActivations ? { ggmlActivations } : {}) });
  try {
    return (await llm.score(PROMPT)).logprobs.slice(1) as number[];
  } finally {
    llm.dispose();
  }
}

describe('ggmlActivations on a Q4_K_M GGUF', () => {
  it("'q8' is the default; 'q8' and 'f32' both reach the kernels and give close scores", async () => {
    const [byDefault, q8, f32] = [await scores(), await scores('q8'), await scores('f32')];
    expect(byDefault).toEqual(q8);
    const diffs = q8.map((v, i) => Math.abs(v - f32[i]!));
    expect(Math.max(...diffs)).toBeGreaterThan(1e-6); // the activation rounding is really applied
    const meanQ8 = q8.reduce((a, b) => a + b, 0) / q8.length;
    const meanF32 = f32.reduce((a, b) => a + b, 0) / f32.length;
    expect(Math.abs(meanQ8 - meanF32)).toBeLessThan(0.02); // nats per token
  }, 120_000);

  it('a bad value is a typed error naming the field', async () => {
    const e = await engineErrorOfAsync(LLM.create({ model: file, backend: 'reference', kvCacheMemory: 2 << 20, ggmlActivations: 'q4' as never }));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.field).toBe('ggmlActivations');
  });
});
