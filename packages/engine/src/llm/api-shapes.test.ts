/**
 * The library API shapes vLLM users expect: batched chat, streaming every one of n completions, logprobs with rank
 * and decoded token, prompt_logprobs, include_stop_str_in_output.
 */
import { modelTinyPath } from '@kvq/model-tiny';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenLogprobs } from '../sampling/sampler.js';
import { LLM } from './llm.js';

let llm: LLM;
beforeAll(async () => {
  llm = await LLM.create({ model: modelTinyPath, backend: 'reference', kvCacheMemory: 4 << 20 });
});
afterAll(() => llm.dispose());

describe('LLM.chat', () => {
  it('takes one conversation or a batch and returns one output per conversation, in order', async () => {
    const a = [{ role: 'user', content: 'Hi' }];
    const b = [{ role: 'user', content: 'Tell me a story' }];
    const opts = { temperature: 0, maxTokens: 6 };
    const [one] = await llm.chat(a, opts);
    const batch = await llm.chat([a, b], opts);
    expect(batch).toHaveLength(2);
    expect(batch[0]!.outputs[0]!.tokenIds).toEqual(one!.outputs[0]!.tokenIds);
    const [alone] = await llm.chat(b, opts);
    expect(batch[1]!.outputs[0]!.tokenIds).toEqual(alone!.outputs[0]!.tokenIds);
  });
});

describe('LLM.stream', () => {
  it('streams every one of n completions, each ending once, and their deltas add up to generate()', async () => {
    const params = { n: 3, seed: 11, temperature: 1, maxTokens: 10 };
    const text = new Map<number, string>();
    const ends = new Map<number, number>();
    for await (const d of llm.stream('Once upon a time', params)) {
      text.set(d.index, (text.get(d.index) ?? '') + d.text);
      if (d.finished) ends.set(d.index, (ends.get(d.index) ?? 0) + 1);
    }
    expect([...text.keys()].sort()).toEqual([0, 1, 2]);
    expect([...ends.values()]).toEqual([1, 1, 1]);
    const [out] = await llm.generate('Once upon a time', params);
    for (const o of out!.outputs) expect(text.get(o.index)).toBe(o.text);
  });
});

describe('generate() decodes its text once at the end', () => {
  it('the same text as streaming, with and without special tokens, ended by length, a stop token id or a stop string', async () => {
    const greedy = { temperature: 0, maxTokens: 12 };
    const [probe] = await llm.generate('Once upon a time', greedy);
    const ids = probe!.outputs[0]!.tokenIds;
    const stopString = probe!.outputs[0]!.text.slice(3, 6);
    for (const params of [
      { ...greedy, skipSpecialTokens: false },
      { ...greedy, stopTokenIds: [ids[4]!], skipSpecialTokens: false }, // ends on a stop token id: its text is left out
      { ...greedy, stop: [stopString] },
      { n: 2, seed: 3, temperature: 2, maxTokens: 20, ignoreEos: true },
    ]) {
      const streamed = new Map<number, string>();
      for await (const d of llm.stream('Once upon a time', params)) streamed.set(d.index, (streamed.get(d.index) ?? '') + d.text);
      const [out] = await llm.generate('Once upon a time', params);
      for (const o of out!.outputs) expect(o.text, JSON.stringify(params)).toBe(streamed.get(o.index));
    }
  });
});

describe('incremental detokenization', () => {
  it('streamed text only grows, holds back split characters, and ends as decode(tokenIds)', async () => {
    // A flat distribution over kvq-tiny's 2048-token byte-level vocabulary draws byte tokens that split UTF-8
    // characters: the engine decodes a window of recent ids per token and holds such a character back until it
    // completes (or the sequence ends), so no delta has to be taken back.
    const params = { n: 4, seed: 5, temperature: 3, maxTokens: 64, ignoreEos: true };
    const text = new Map<number, string>();
    let heldBack = 0;
    for await (const d of llm.stream('Once upon a time', params)) {
      if (d.text === '' && !d.finished) heldBack++;
      text.set(d.index, (text.get(d.index) ?? '') + d.text);
      const o = d.output.outputs.find((x) => x.index === d.index)!;
      expect(o.text.startsWith(text.get(d.index)!)).toBe(true);
    }
    const [out] = await llm.generate('Once upon a time', params);
    for (const o of out!.outputs) {
      expect(text.get(o.index)).toBe(o.text);
      expect(o.text).toBe(llm.model.tokenizer.decode(o.tokenIds, { skipSpecialTokens: true }));
    }
    expect(heldBack).toBeGreaterThan(0);
  });
});

describe('logprobs', () => {
  it('each generated token carries its rank and decoded text; top alternatives too', async () => {
    const [out] = await llm.generate('Once upon a time', { temperature: 0, maxTokens: 5, logprobs: 3 });
    const o = out!.outputs[0]!;
    for (const [i, lp] of o.logprobs!.entries()) {
      expect(lp.tokenId).toBe(o.tokenIds[i]);
      expect(lp.rank).toBe(1); // greedy picks the most likely token
      expect(lp.decodedToken).toBe(llm.model.tokenizer.decode([lp.tokenId], { skipSpecialTokens: false }));
      expect(lp.top.map((t) => t.rank)).toEqual([1, 2, 3]);
      for (const t of lp.top) expect(typeof t.decodedToken).toBe('string');
    }
    const [sampled] = await llm.generate('Once upon a time', { temperature: 1.5, seed: 3, maxTokens: 12, logprobs: 0 });
    expect(sampled!.outputs[0]!.logprobs!.some((lp) => lp.rank > 1)).toBe(true);
  });

  it('prompt_logprobs score every prompt token after the first, equal to score(), with top-k and ranks', async () => {
    const prompt = 'Tom and his dog went to the park.';
    const [out] = await llm.generate(prompt, { temperature: 0, maxTokens: 2, promptLogprobs: 2 });
    const scored = await llm.score(prompt);
    const p = out!.promptTokenLogprobs!;
    expect(p).toHaveLength(scored.tokenIds.length);
    expect(p[0]).toBeUndefined();
    for (let i = 1; i < p.length; i++) {
      expect(p[i]!.tokenId).toBe(scored.tokenIds[i]);
      expect(p[i]!.logprob).toBeCloseTo(scored.logprobs[i]!, 5);
      expect(p[i]!.top).toHaveLength(2);
      expect(p[i]!.rank).toBeGreaterThanOrEqual(1);
    }
  });

  it('prompt_logprobs are complete when the prompt is prefilled in several chunks', async () => {
    const chunked = await LLM.create({ model: modelTinyPath, backend: 'reference', kvCacheMemory: 4 << 20, maxNumBatchedTokens: 8 });
    try {
      const prompt = 'And the LORD said unto Moses, Go in unto Pharaoh, and tell him';
      const [out] = await chunked.generate(prompt, { temperature: 0, maxTokens: 1, promptLogprobs: 0 });
      const scored = await llm.score(prompt);
      const p = out!.promptTokenLogprobs!;
      expect(p.length).toBeGreaterThan(8);
      for (let i = 1; i < p.length; i++) expect(p[i]!.logprob).toBeCloseTo(scored.logprobs[i]!, 5);
    } finally {
      chunked.dispose();
    }
  });

  it('rank counts strictly more likely tokens (ties share the better rank)', () => {
    const r = tokenLogprobs([1, 3, 3, 2], 3, 4);
    expect(r.rank).toBe(3);
    expect(r.top.map((t) => [t.tokenId, t.rank])).toEqual([[1, 1], [2, 1], [3, 3], [0, 4]]);
  });
});

describe('bad_words', () => {
  it('a banned word never appears in greedy output, which otherwise contains it', async () => {
    const [free] = await llm.generate('In the beginning God', { temperature: 0, maxTokens: 24 });
    const text = free!.outputs[0]!.text;
    // vLLM bans a word's own token ids and its leading-space variant when that has the same length with another first
    // token; pick a word of this output for which both variants exist, so the ban covers every place it occurs.
    const enc = (t: string) => llm.model.tokenizer.encode(t, { addSpecialTokens: false });
    const word = [...new Set(text.match(/[A-Za-z]+/g) ?? [])].find((w) => enc(` ${w}`).length === enc(w).length && enc(` ${w}`)[0] !== enc(w)[0]);
    expect(word, `a word of ${JSON.stringify(text)} with a same-length spaced variant`).toBeDefined();
    const [banned] = await llm.generate('In the beginning God', { temperature: 0, maxTokens: 24, ignoreEos: true, badWords: [word!] });
    expect(banned!.outputs[0]!.text).not.toMatch(new RegExp(`\\b${word}\\b`));
  });
});

describe('include_stop_str_in_output', () => {
  it('keeps the matched stop string at the end of the text', async () => {
    const [full] = await llm.generate('In the beginning', { temperature: 0, maxTokens: 24 });
    const text = full!.outputs[0]!.text;
    const stop = text.trim().split(/\s+/)[2]!;
    const [cut] = await llm.generate('In the beginning', { temperature: 0, maxTokens: 24, stop: [stop] });
    const [kept] = await llm.generate('In the beginning', { temperature: 0, maxTokens: 24, stop: [stop], includeStopStrInOutput: true });
    expect(kept!.outputs[0]!.text).toBe(cut!.outputs[0]!.text + stop);
    expect(kept!.outputs[0]!.finishReason).toBe('stop');
  });
});
