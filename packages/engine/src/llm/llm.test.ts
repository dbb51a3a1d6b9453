import { readFileSync } from 'node:fs';
import { fixturePath } from '@kvq/fixtures';
import { describe, expect, it } from 'vitest';
import { LLM } from './llm.js';

interface Reference {
  greedy: { prompt: string; prompt_token_ids: number[]; token_ids: number[] }[];
  nll: { text: string; token_ids: number[]; auto: { nll_sum: number }; fp8_e4m3_scale1: { nll_sum: number }; fp8_e5m2_scale1: { nll_sum: number } }[];
}

for (const [name, modelFile] of [
  ['stories260K', 'models/stories260K/stories260K.bin'],
  ['babyllama-tok105', 'models/babyllama-tok105/model.bin'],
] as const) {
  const modelPath = fixturePath(modelFile);
  const ref = JSON.parse(readFileSync(fixturePath(`reference/${name}.json`), 'utf8')) as Reference;
  describe(`${name} against the independent reference`, () => {
    const make = (kvCacheDtype: 'auto' | 'fp8_e4m3' | 'fp8_e5m2') =>
      LLM.create({ model: modelPath, kvCacheDtype, backend: 'reference', kvCacheMemory: 8 << 20, blockSize: 16 });

    it('greedy token ids from BOS and from a prompt match (KV auto)', async () => {
      const llm = await make('auto');
      for (const g of ref.greedy) {
        const generated = g.token_ids.slice(g.prompt_token_ids.length);
        const [out] = await llm.generate([{ promptTokenIds: g.prompt_token_ids }], { temperature: 0, maxTokens: generated.length, ignoreEos: true });
        expect(out!.outputs[0]!.tokenIds).toEqual(generated);
      }
    });

    it('sentence NLLs match for auto, and for FP8 e4m3/e5m2 with scale 1.0 to 1e-3 relative', async () => {
      for (const dtype of ['auto', 'fp8_e4m3', 'fp8_e5m2'] as const) {
        const llm = await make(dtype);
        for (const s of ref.nll) {
          const r = await llm.score(s.token_ids);
          const key = dtype === 'auto' ? 'auto' : dtype === 'fp8_e4m3' ? 'fp8_e4m3_scale1' : 'fp8_e5m2_scale1';
          const want = s[key].nll_sum;
          expect(Math.abs(r.nllSum - want) / want, `${dtype}: ${s.text} got ${r.nllSum} want ${want}`).toBeLessThan(1e-3);
        }
      }
    });
  });
}

const bin = fixturePath('models/stories260K/stories260K.bin');
const gguf = fixturePath('models/stories260K/stories260K.gguf');
describe('one model, three files', () => {
  it('stories260K from .bin, GGUF and the converted HF folder generates identical tokens (auto and FP8)', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { convertToHf } = await import('../convert/convert.js');
    const dir = mkdtempSync(join(tmpdir(), 'kvq-hf-'));
    try {
      await convertToHf(bin, join(dir, 'hf'));
      for (const kvCacheDtype of ['auto', 'fp8'] as const) {
        const outputs = [];
        for (const model of [bin, gguf, join(dir, 'hf')]) {
          const llm = await LLM.create({ model, kvCacheDtype, kvCacheMemory: 4 << 20 });
          const [o] = await llm.generate('Once upon a time', { temperature: 0, maxTokens: 40 });
          outputs.push(o!.outputs[0]!.tokenIds);
        }
        expect(outputs[1]).toEqual(outputs[0]);
        expect(outputs[2]).toEqual(outputs[0]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
