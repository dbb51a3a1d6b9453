import { createReferenceBackend } from '@kvq/kernels';
import { describe, expect, it } from 'vitest';
import { LLMEngine, type RequestOutput } from './engine.js';
import { makeRuntime, randomLlamaWeights } from './testing.js';

const backend = createReferenceBackend();
const model = randomLlamaWeights({ hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, intermediateSize: 48, vocabSize: 61, maxPositions: 256 });

function engineWith(numBlocks: number, opts: { maxNumBatchedTokens?: number; dtype?: 'f32' | 'e4m3fn'; prefix?: boolean } = {}) {
  const rt = makeRuntime(backend, model, { dtype: opts.dtype ?? 'f32', numBlocks, blockSize: 4, enablePrefixCaching: opts.prefix ?? true });
  const engine = new LLMEngine({
    forward: rt.forward,
    manager: rt.manager,
    eosTokenIds: [],
    scheduler: { maxModelLen: 200, maxNumBatchedTokens: opts.maxNumBatchedTokens ?? 64, maxNumSeqs: 16 },
  });
  return { engine, ...rt };
}

function runAll(engine: LLMEngine): Map<string, RequestOutput> {
  const done = new Map<string, RequestOutput>();
  for (let guard = 0; engine.hasUnfinishedRequests(); guard++) {
    if (guard > 10_000) throw new Error('engine did not finish');
    for (const out of engine.step()) if (out.finished) done.set(out.requestId, out);
  }
  return done;
}

function prompt(seed: number, length: number): number[] {
  return Array.from({ length }, (_, i) => (seed * 31 + i * 7 + ((seed * i) % 5)) % 61);
}

describe('LLMEngine', () => {
  it('a finalTextOnly request is reported once, finished, with the tokens a per-step request gets', () => {
    const p = prompt(3, 7);
    const { engine } = engineWith(64);
    engine.addRequest('final', p, { temperature: 0, maxTokens: 5 }, { finalTextOnly: true });
    engine.addRequest('steps', p, { temperature: 0, maxTokens: 5 });
    const seen = new Map<string, RequestOutput[]>();
    while (engine.hasUnfinishedRequests()) for (const out of engine.step()) seen.set(out.requestId, [...(seen.get(out.requestId) ?? []), out]);
    const final = seen.get('final')!;
    expect(final).toHaveLength(1);
    expect(final[0]!.finished).toBe(true);
    expect(seen.get('steps')!.length).toBeGreaterThan(1);
    expect(final[0]!.outputs[0]!.tokenIds).toEqual(seen.get('steps')!.at(-1)!.outputs[0]!.tokenIds);
  });

  it('greedy decode equals a naive loop that re-runs the whole context every step', () => {
    const p = prompt(1, 9);
    const { engine } = engineWith(64);
    engine.addRequest('a', p, { temperature: 0, maxTokens: 6 });
    const out = runAll(engine).get('a')!;
    // naive: fresh cache, full prefill of prompt + generated tokens, argmax of the last row
    const tokens = [...p];
    for (let i = 0; i < 6; i++) {
      const { engine: e } = engineWith(64, { prefix: false });
      e.addRequest('x', tokens, { temperature: 0, maxTokens: 1 });
      tokens.push(runAll(e).get('x')!.outputs[0]!.tokenIds[0]!);
    }
    expect(out.outputs[0]!.tokenIds).toEqual(tokens.slice(p.length));
    expect(out.outputs[0]!.finishReason).toBe('length');
  });

  it('concurrent requests with chunked prefill and preemption give the same greedy tokens as alone; no leaks', () => {
    const prompts = Array.from({ length: 10 }, (_, i) => prompt(i + 2, 3 + ((i * 7) % 23)));
    const alone = prompts.map((p, i) => {
      const { engine } = engineWith(200);
      engine.addRequest(`r${i}`, p, { temperature: 0, maxTokens: 5 + (i % 4) });
      return runAll(engine).get(`r${i}`)!.outputs[0]!.tokenIds;
    });
    // Few blocks and a small token budget force chunked prefill and recompute preemption.
    const { engine, manager } = engineWith(24, { maxNumBatchedTokens: 16 });
    prompts.forEach((p, i) => engine.addRequest(`r${i}`, p, { temperature: 0, maxTokens: 5 + (i % 4) }));
    const done = runAll(engine);
    prompts.forEach((_, i) => expect(done.get(`r${i}`)!.outputs[0]!.tokenIds, `request ${i}`).toEqual(alone[i]));
    expect(manager.metrics().numPreemptions).toBeGreaterThan(0);
    expect(manager.metrics().numFreeBlocks).toBe(manager.metrics().numUsableBlocks);
    manager.checkInvariants();
  });

  it('prefix-cache hits skip computation and keep outputs identical', () => {
    const shared = prompt(5, 17);
    const { engine, manager } = engineWith(64);
    engine.addRequest('first', shared, { temperature: 0, maxTokens: 3 });
    const a = runAll(engine).get('first')!;
    engine.addRequest('second', shared, { temperature: 0, maxTokens: 3 });
    const b = runAll(engine).get('second')!;
    expect(b.metrics.numCachedTokens).toBe(16);
    expect(b.outputs[0]!.tokenIds).toEqual(a.outputs[0]!.tokenIds);
    expect(manager.metrics().prefixCacheHits).toBe(16);
  });

  it('n > 1 forks with copy-on-write, seeds reproduce, and abort frees blocks', () => {
    const { engine, manager } = engineWith(64);
    engine.addRequest('s', prompt(9, 6), { n: 3, temperature: 1, seed: 42, maxTokens: 8 });
    const first = runAll(engine).get('s')!;
    expect(first.outputs).toHaveLength(3);
    engine.addRequest('s2', prompt(9, 6), { n: 3, temperature: 1, seed: 42, maxTokens: 8 });
    const again = runAll(engine).get('s2')!;
    expect(again.outputs.map((o) => o.tokenIds)).toEqual(first.outputs.map((o) => o.tokenIds));
    engine.addRequest('gone', prompt(3, 20), { maxTokens: 50 });
    engine.step();
    const aborted = engine.abortRequest('gone')!;
    expect(aborted.outputs[0]!.finishReason).toBe('abort');
    expect(engine.hasUnfinishedRequests()).toBe(false);
    expect(manager.metrics().numFreeBlocks).toBe(manager.metrics().numUsableBlocks);
  });

  it('scores a prompt: logprobs equal log-softmax of the logits at each position', () => {
    const { engine } = engineWith(64, { maxNumBatchedTokens: 8 });
    const p = prompt(4, 20);
    const rows: number[] = [];
    engine.addRequest('score', p, {}, { scoreOnly: true, onPromptLogits: (first, _l, n) => rows.push(first, n) });
    const out = runAll(engine).get('score')!;
    expect(out.promptLogprobs).toHaveLength(20);
    expect(out.promptLogprobs![0]).toBeUndefined();
    expect(out.promptLogprobs!.slice(1).every((x) => x! < 0)).toBe(true);
    expect(rows).toEqual([0, 8, 8, 8, 16, 4]); // chunked by the token budget
  });

  it('scoring a prompt whose blocks are in the prefix cache still scores every position (no cached rows skipped)', () => {
    const { engine } = engineWith(64, { prefix: true });
    const p = prompt(5, 40);
    engine.addRequest('first', p, {}, { scoreOnly: true });
    const first = runAll(engine).get('first')!;
    engine.addRequest('again', p, {}, { scoreOnly: true });
    const again = runAll(engine).get('again')!;
    expect(first.promptLogprobs).toHaveLength(40);
    expect(again.promptLogprobs).toEqual(first.promptLogprobs);
  });

  it('rejects bad requests with typed errors', () => {
    const { engine } = engineWith(64);
    expect(() => engine.addRequest('x', [], {})).toThrow(/no tokens/);
    expect(() => engine.addRequest('x', [61], {})).toThrow(/outside the vocabulary/);
    expect(() => engine.addRequest('x', new Array(200).fill(1), {})).toThrow(/maximum model length/);
    expect(() => engine.addRequest('x', [1], { temperature: -1 })).toThrow(/temperature/);
    engine.addRequest('x', [1], {});
    expect(() => engine.addRequest('x', [1], {})).toThrow(/already in use/);
  });
});

describe('calculate_kv_scales', () => {
  it('sets amax/200, amax/200, amax/100 from the first pass of each layer, then freezes', async () => {
    const { calculateKvScalesObserver } = await import('./kv-scales.js');
    const { engine, storage, forward } = engineWith(64, { dtype: 'e4m3fn' });
    const seen: { layer: number; q: number; k: number; v: number }[] = [];
    const calc = calculateKvScalesObserver(backend, storage);
    engine.setAttentionObserver((layer, t) => {
      if (!calc.done()) {
        const amax = (x: Float32Array, n: number) => x.subarray(0, n).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const d = forward.dims;
        seen.push({ layer, q: amax(t.query, t.numTokens * d.numHeads * d.headDim), k: amax(t.key, t.numTokens * d.numKvHeads * d.headDim), v: amax(t.value, t.numTokens * d.numKvHeads * d.headDim) });
      }
      calc.observer(layer, t);
    });
    engine.addRequest('a', prompt(2, 12), { temperature: 0, maxTokens: 4 });
    runAll(engine);
    expect(calc.done()).toBe(true);
    expect(seen).toHaveLength(2);
    for (const s of seen) {
      const l = storage.layer(s.layer);
      expect(l.kScale[0]).toBe(Math.fround(s.k / 200));
      expect(l.vScale[0]).toBe(Math.fround(s.v / 100));
      expect(l.qScale[0]).toBe(Math.fround(s.q / 200));
    }
  });
});
