import { createReferenceBackend, stackWeightRows, type KernelBackend, type WeightMatrix } from '@kvq/kernels';
import { createBackend } from '@kvq/kernels-cpu';
import { describe, expect, it } from 'vitest';
import { EngineError } from '../errors.js';
import { LLMEngine, type RequestOutput } from './engine.js';
import type { LlamaForwardOptions, LlamaWeights } from './forward.js';
import { splitRows } from './stacked-projections.js';
import { makeRuntime, randomLlamaWeights } from './testing.js';

const shape = { hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 96, vocabSize: 67, maxPositions: 256 };

/** `w` with each layer's q/k/v and gate/up moved into one array each (as `loadModel` leaves them). */
function stacked(w: LlamaWeights): LlamaWeights {
  const views = (parts: WeightMatrix[]) => stackWeightRows(parts)!.views;
  return {
    ...w,
    layers: w.layers.map((l) => {
      const [qProj, kProj, vProj] = views([l.qProj, l.kProj, l.vProj]);
      const [gateProj, upProj] = views([l.gateProj, l.upProj]);
      return { ...l, qProj: qProj!, kProj: kProj!, vProj: vProj!, gateProj: gateProj!, upProj: upProj! };
    }),
  };
}

/** Runs three requests (one long prompt: prefill past 4 rows; decode steps of 3, 2 and 1 rows) and counts linear calls. */
function run(backend: KernelBackend, weights: LlamaWeights, dims: ReturnType<typeof randomLlamaWeights>['dims'], options: LlamaForwardOptions = {}): { outs: RequestOutput[]; linearCalls: number } {
  let linearCalls = 0;
  const linear = backend.linear.bind(backend);
  backend.linear = (a) => {
    linearCalls++;
    linear(a);
  };
  const rt = makeRuntime(backend, { weights, dims }, { dtype: 'f32', numBlocks: 64, blockSize: 4, enablePrefixCaching: false }, options);
  const engine = new LLMEngine({ forward: rt.forward, manager: rt.manager, eosTokenIds: [], scheduler: { maxModelLen: 200, maxNumBatchedTokens: 64, maxNumSeqs: 8 } });
  const prompts = [Array.from({ length: 11 }, (_, i) => (i * 7 + 3) % 67), [5, 9], [1, 2, 3]];
  prompts.forEach((p, i) => engine.addRequest(`r${i}`, p, { temperature: 0, maxTokens: 4 + 3 * i, logprobs: 3, ignoreEos: true }));
  const outs: RequestOutput[] = [];
  while (engine.hasUnfinishedRequests()) for (const o of engine.step()) if (o.finished) outs.push(o);
  backend.linear = linear;
  return { outs: outs.sort((a, b) => a.requestId.localeCompare(b.requestId)), linearCalls };
}

describe('stacked q/k/v and gate/up projections', () => {
  const backends: [string, () => KernelBackend][] = [
    ['reference', () => createReferenceBackend()],
    ['cpu', () => createBackend({ threads: 2 })],
  ];
  for (const dtype of ['f32', 'q8_0', 'q4_0'] as const) {
    it.each(backends)(`%s, ${dtype}: the same tokens and logprobs as separate projections, in fewer calls`, (_, make) => {
      const backend = make();
      const { weights, dims } = randomLlamaWeights(shape, 3, dtype);
      const separate = run(backend, weights, dims);
      const joined = run(backend, stacked(weights), dims);
      for (let i = 0; i < separate.outs.length; i++) {
        const a = separate.outs[i]!.outputs[0]!;
        const b = joined.outs[i]!.outputs[0]!;
        expect(b.tokenIds).toEqual(a.tokenIds);
        expect(b.logprobs!.map((l) => l.top.map((t) => [t.tokenId, t.logprob]))).toEqual(a.logprobs!.map((l) => l.top.map((t) => [t.tokenId, t.logprob])));
      }
      // Decode steps of at most 4 rows run 2 calls fewer per layer (q/k/v: 1 instead of 3; gate/up: 1 instead of 2).
      expect(joined.linearCalls).toBeLessThan(separate.linearCalls);
      // stackProjections: false runs the stacked weights' views one call each.
      expect(run(backend, stacked(weights), dims, { stackProjections: false }).linearCalls).toBe(separate.linearCalls);
      backend.dispose?.();
    });
  }

  it('stackProjections must be a boolean', () => {
    const { weights, dims } = randomLlamaWeights(shape, 3);
    expect(() => makeRuntime(createReferenceBackend(), { weights, dims }, { dtype: 'f32', numBlocks: 8, blockSize: 4 }, { stackProjections: 'yes' as unknown as boolean })).toThrow(EngineError);
  });

  it('splitRows copies each row of a stacked output apart', () => {
    const out = Float32Array.from({ length: 2 * 6 }, (_, i) => i);
    const a = new Float32Array(2 * 3);
    const b = new Float32Array(2);
    const c = new Float32Array(2 * 2);
    splitRows(out, 2, [3, 1, 2], [a, b, c]);
    expect([...a]).toEqual([0, 1, 2, 6, 7, 8]);
    expect([...b]).toEqual([3, 9]);
    expect([...c]).toEqual([4, 5, 10, 11]);
  });
});
