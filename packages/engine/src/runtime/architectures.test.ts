import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { createReferenceBackend, type KernelBackend } from '@kvq/kernels';
import { createBackend } from '@kvq/kernels-cpu';
import { describe, expect, it } from 'vitest';

import { LLM } from '../llm/llm.js';
import { loadModel } from '../load/load-model.js';
import { llamaDimsOf, llamaWeightsOf } from './architecture.js';
import { ModelRunner } from './model-runner.js';
import { makeRuntime } from './testing.js';

/**
 * Each architecture variant against an independent float64 numpy forward pass
 * (tooling/arch-reference/arch_reference.py, written from the transformers semantics in docs/spec/architectures.md):
 * random-weight bf16 Hugging Face folders with the family's features switched on (sliding windows smaller than the
 * sequence, soft-capping, q/k norms, fused Phi-3 projections, yarn / dynamic / longrope RoPE, a Gemma 3 multimodal
 * config with vision tensors). kvq prefills the 12-token prompt (logits of every row), then decodes greedily one
 * token at a time through the paged cache (block size 4); every row's logits must be within LOGIT_BOUND of numpy's and
 * the greedy tokens equal numpy's.
 */
const REF_DIR = fileURLToPath(new URL('../../../../tooling/arch-reference/', import.meta.url));
const MODELS = ['qwen3-yarn-swa', 'gemma2-softcap', 'gemma3-multimodal-text', 'phi3-longrope', 'qwen2-dynamic-swa', 'mistral-swa'] as const;
/**
 * float32 kernels vs float64 numpy over 2-3 layers of width <= 64 and 20 positions. Measured 2026-12-03: max abs
 * error 3.8e-7 .. 7.0e-7 on the reference backend, 8.0e-7 .. 1.9e-6 on the CPU backend (AVX2); the smallest top-2
 * greedy margin of the fixtures is 5.1e-3.
 */
const LOGIT_BOUND = 1e-5;

interface Expected {
  files: Record<string, string>;
  max_model_len: number;
  prompt: number[];
  greedy: number[];
  greedy_top2_margin_min: number;
  logits: number[][];
}

const backends: Array<[string, () => KernelBackend]> = [
  ['reference', () => createReferenceBackend()],
  ['cpu', () => createBackend()],
];

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

async function run(name: string, backend: KernelBackend) {
  const dir = `${REF_DIR}models/${name}`;
  const expected = JSON.parse(readFileSync(`${REF_DIR}expected/${name}.json`, 'utf8')) as Expected;
  for (const [file, sha] of Object.entries(expected.files)) {
    expect(createHash('sha256').update(readFileSync(`${dir}/${file}`)).digest('hex'), `${name}/${file} is the file numpy read`).toBe(sha);
  }
  const model = await loadModel(dir);
  const rt = makeRuntime(backend, { weights: llamaWeightsOf(model), dims: llamaDimsOf(model.config, expected.max_model_len) }, { dtype: 'f32', numBlocks: 16, blockSize: 4 });
  const runner = new ModelRunner(rt.forward, rt.manager);
  const vocab = model.config.vocabSize;
  const rows: Float32Array[] = [];
  rt.manager.addSequence('s', expected.prompt);
  let out = runner.execute([{ seqId: 's', allocation: rt.manager.allocate('s')!, logits: 'all' }]);
  for (let r = 0; r < expected.prompt.length; r++) rows.push(out.logits.subarray(r * vocab, (r + 1) * vocab));
  const greedy: number[] = [];
  for (let step = 0; step < expected.greedy.length; step++) {
    const token = argmax(rows[rows.length - 1]!);
    greedy.push(token);
    if (step + 1 === expected.greedy.length) break;
    rt.manager.appendTokens('s', [token]);
    out = runner.execute([{ seqId: 's', allocation: rt.manager.allocate('s')!, logits: 'last' }]);
    rows.push(out.logits.slice(0, vocab));
  }
  let maxErr = 0;
  rows.forEach((row, r) => row.forEach((v, i) => (maxErr = Math.max(maxErr, Math.abs(v - expected.logits[r]![i]!)))));
  return { model, greedy, maxErr, rows: rows.length, expected };
}

describe.each(backends)('architecture variants vs numpy float64 (%s backend)', (_, make) => {
  const backend = make();
  it.each(MODELS)('%s: logits of every position within the bound, greedy tokens equal', async (name) => {
    const { greedy, maxErr, rows, expected } = await run(name, backend);
    expect(rows).toBe(expected.logits.length);
    expect(maxErr).toBeLessThan(LOGIT_BOUND);
    expect(greedy).toEqual(expected.greedy);
  });
});

describe('LLM.create runs every family end to end', () => {
  it.each(MODELS)('%s: LLM.generate (f32 cache) gives the numpy greedy tokens; an FP8 cache generates too', async (name) => {
    const expected = JSON.parse(readFileSync(`${REF_DIR}expected/${name}.json`, 'utf8')) as Expected;
    const model = `${REF_DIR}models/${name}`;
    const opts = { model, backend: 'reference' as const, kvCacheMemory: 1 << 20, maxModelLen: expected.max_model_len, blockSize: 8 };
    const exact = await LLM.create({ ...opts, kvCacheDtype: 'f32' });
    const [out] = await exact.generate({ promptTokenIds: expected.prompt }, { temperature: 0, maxTokens: expected.greedy.length, ignoreEos: true });
    expect(out!.outputs[0]!.tokenIds).toEqual(expected.greedy);
    const fp8 = await LLM.create({ ...opts, kvCacheDtype: 'fp8' });
    const [q] = await fp8.generate({ promptTokenIds: expected.prompt }, { temperature: 0, maxTokens: 4, ignoreEos: true });
    expect(q!.outputs[0]!.tokenIds).toHaveLength(4);
    if (name === 'gemma2-softcap') {
      await expect(LLM.create({ ...opts, kvCacheDtype: 'fp8', fp8Query: true })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'fp8Query' });
    }
  });
});

describe('architecture fixtures exercise what they claim', () => {
  it('configs parse to the variant features (windows per layer, norms, fused views, text_config)', async () => {
    const gemma3 = await loadModel(`${REF_DIR}models/gemma3-multimodal-text`);
    expect(gemma3.config).toMatchObject({
      architecture: 'Gemma3ForCausalLM',
      tensorPrefix: 'language_model.',
      layerTypes: ['sliding_attention', 'sliding_attention', 'full_attention'],
      localRope: { theta: 10000, scaling: null },
      qkNorm: true,
      normWeightOffset: 1,
      eosTokenIds: [1, 106],
    });
    expect(gemma3.warnings.join('\n')).toMatch(/2 checkpoint tensors are not used: vision_tower/);
    const phi3 = await loadModel(`${REF_DIR}models/phi3-longrope`);
    const l0 = phi3.weights.layers[0]!;
    // q/k/v and gate/up are row ranges of the fused tensors' memory, not copies.
    expect(l0.q.data.buffer).toBe(l0.v.data.buffer);
    expect(l0.gate.data.buffer).toBe(l0.up.data.buffer);
    expect(phi3.config.ropeScaling).toMatchObject({ type: 'longrope', originalMaxPositions: 8, factor: 8 });
    const qwen2 = await loadModel(`${REF_DIR}models/qwen2-dynamic-swa`);
    expect(qwen2.config.layerTypes).toEqual(['sliding_attention', 'sliding_attention']);
    const gemma2 = await loadModel(`${REF_DIR}models/gemma2-softcap`);
    // sqrt(48) rounded to bfloat16, as transformers builds the normalizer in the model dtype.
    expect(gemma2.config.embeddingScale).toBe(6.9375);
    expect(gemma2.config.layerTypes).toEqual(['sliding_attention', 'full_attention']);
  });

  it('negative control: without its sliding window or soft-capping, a model misses the reference', async () => {
    const backend = createReferenceBackend();
    for (const [name, patch] of [
      ['mistral-swa', { slidingWindow: null, layerTypes: undefined }],
      ['gemma2-softcap', { attnLogitSoftcapping: undefined }],
      ['phi3-longrope', { ropeScaling: null }],
    ] as const) {
      const dir = `${REF_DIR}models/${name}`;
      const expected = JSON.parse(readFileSync(`${REF_DIR}expected/${name}.json`, 'utf8')) as Expected;
      const model = await loadModel(dir);
      const config = { ...model.config, ...patch };
      const rt = makeRuntime(backend, { weights: llamaWeightsOf(model), dims: llamaDimsOf(config, expected.max_model_len) }, { dtype: 'f32', numBlocks: 16, blockSize: 4 });
      const tokens = [...expected.prompt, ...expected.greedy.slice(0, -1)];
      rt.manager.addSequence('s', tokens);
      const out = new ModelRunner(rt.forward, rt.manager).execute([{ seqId: 's', allocation: rt.manager.allocate('s')!, logits: 'all' }]);
      let maxErr = 0;
      for (let r = 0; r < tokens.length; r++) {
        for (let i = 0; i < model.config.vocabSize; i++) maxErr = Math.max(maxErr, Math.abs(out.logits[r * model.config.vocabSize + i]! - expected.logits[r]![i]!));
      }
      expect(maxErr, name).toBeGreaterThan(1e-2);
    }
  });
});
