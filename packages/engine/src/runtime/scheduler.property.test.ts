import fc from 'fast-check';
import { createReferenceBackend } from '@kvq/kernels';
import { describe, expect, it } from 'vitest';
import { LLMEngine, type RequestOutput } from './engine.js';
import { makeRuntime, randomLlamaWeights } from './testing.js';

const backend = createReferenceBackend();
const model = randomLlamaWeights({ hiddenSize: 16, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 8, intermediateSize: 24, vocabSize: 37, maxPositions: 128 });

function engine(numBlocks: number, budget: number, maxNumSeqs: number, dtype: 'f32' | 'e4m3fn') {
  const rt = makeRuntime(backend, model, { dtype, numBlocks, blockSize: 4, enablePrefixCaching: true });
  return { ...rt, engine: new LLMEngine({ forward: rt.forward, manager: rt.manager, eosTokenIds: [], scheduler: { maxModelLen: 100, maxNumBatchedTokens: budget, maxNumSeqs } }) };
}

const request = fc.record({
  prompt: fc.array(fc.integer({ min: 0, max: 36 }), { minLength: 1, maxLength: 30 }),
  maxTokens: fc.integer({ min: 1, max: 8 }),
  abortAtStep: fc.option(fc.integer({ min: 0, max: 12 }), { nil: undefined }),
  arriveAtStep: fc.integer({ min: 0, max: 6 }),
});

describe('scheduler properties', () => {
  it('random arrivals, lengths, aborts and preemptions: every finished request equals running it alone; no leaks', () => {
    const aloneCache = new Map<string, number[]>();
    const alone = (prompt: number[], maxTokens: number, dtype: 'f32' | 'e4m3fn') => {
      const key = `${dtype}:${prompt.join(',')}:${maxTokens}`;
      let hit = aloneCache.get(key);
      if (!hit) {
        const { engine: e } = engine(64, 256, 4, dtype);
        e.addRequest('x', prompt, { temperature: 0, maxTokens });
        let out: RequestOutput | undefined;
        while (e.hasUnfinishedRequests()) for (const o of e.step()) if (o.finished) out = o;
        hit = [...out!.outputs[0]!.tokenIds];
        aloneCache.set(key, hit);
      }
      return hit;
    };
    let preemptions = 0;
    let aborts = 0;
    let chunkedSteps = 0;
    fc.assert(
      fc.property(
        fc.array(request, { minLength: 1, maxLength: 10 }),
        fc.integer({ min: 12, max: 30 }),
        fc.integer({ min: 4, max: 24 }),
        fc.integer({ min: 1, max: 6 }),
        fc.constantFrom('f32' as const, 'e4m3fn' as const),
        (reqs, numBlocks, budget, maxNumSeqs, dtype) => {
          const { engine: e, manager } = engine(numBlocks, budget, maxNumSeqs, dtype);
          const finished = new Map<string, RequestOutput>();
          const aborted = new Set<string>();
          let step = 0;
          const pending = reqs.map((r, i) => ({ ...r, id: `r${i}` }));
          while (pending.length > 0 || e.hasUnfinishedRequests()) {
            for (let i = pending.length - 1; i >= 0; i--) {
              if (pending[i]!.arriveAtStep <= step) {
                const r = pending.splice(i, 1)[0]!;
                e.addRequest(r.id, r.prompt, { temperature: 0, maxTokens: r.maxTokens });
              }
            }
            for (const r of reqs.map((x, i) => ({ ...x, id: `r${i}` }))) {
              if (r.abortAtStep === step && !finished.has(r.id) && e.abortRequest(r.id)) aborted.add(r.id);
            }
            for (const o of e.step()) if (o.finished) finished.set(o.requestId, o);
            manager.checkInvariants();
            if (++step > 2000) throw new Error('no progress');
          }
          for (const [i, r] of reqs.entries()) {
            const id = `r${i}`;
            if (aborted.has(id)) continue;
            expect(finished.get(id)!.outputs[0]!.tokenIds, id).toEqual(alone(r.prompt, r.maxTokens, dtype));
          }
          const m = manager.metrics();
          preemptions += m.numPreemptions;
          aborts += aborted.size;
          chunkedSteps += reqs.some((r) => r.prompt.length > budget) ? 1 : 0;
          expect(m.numFreeBlocks).toBe(m.numUsableBlocks);
          expect(m.numSequences).toBe(0);
        },
      ),
      { numRuns: 200, seed: 20261128 },
    );
    // the random cases really exercised preemption, aborts and chunked prefill
    expect(preemptions).toBeGreaterThan(0);
    expect(aborts).toBeGreaterThan(0);
    expect(chunkedSteps).toBeGreaterThan(0);
  }, 300_000);
});
