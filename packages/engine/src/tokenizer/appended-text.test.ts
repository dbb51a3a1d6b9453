import { rng } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';

import { loadTokenizer } from '../load/load-model.js';
import { testData } from '../testing/fixtures.js';
import { DecodeStream } from './decode-stream.js';
import { Tokenizer } from './tokenizer.js';

/** `count` ids in `[0, vocabSize)` from a seeded generator, always with the first and last ids. */
function sampleIds(vocabSize: number, count: number, seed: number): number[] {
  if (vocabSize <= count) return Array.from({ length: vocabSize }, (_, i) => i);
  const next = rng(seed);
  return [0, vocabSize - 1, ...Array.from({ length: count - 2 }, () => Math.floor(next() * vocabSize))];
}

/** Every pair of `ids`: where `appendedText` is defined, it is the text `decode` adds; returns how many pairs had one. */
function checkPairs(tokenizer: Tokenizer, ids: readonly number[]): number {
  let defined = 0;
  for (const prev of ids) {
    const before = tokenizer.decode([prev]);
    for (const id of ids) {
      const tail = tokenizer.appendedText(prev, id);
      if (tail === undefined) continue;
      defined++;
      const both = tokenizer.decode([prev, id]);
      if (both !== before + tail) expect({ prev, id, both }).toEqual({ prev, id, both: before + tail });
      expect(tail.length).toBeGreaterThan(0);
      expect(tail.endsWith('\uFFFD')).toBe(false);
    }
  }
  return defined;
}

/** The pieces a stream returns for `ids`, and how many times it decoded. */
function streamParts(tokenizer: Tokenizer, ids: readonly number[], skipSpecialTokens: boolean, fast: boolean): { parts: string[]; decodes: number } {
  let decodes = 0;
  const decode = (w: readonly number[]): string => (decodes++, tokenizer.decode(w, { skipSpecialTokens }));
  const stream = new DecodeStream(decode, new Map(), fast ? (prev, id) => tokenizer.appendedText(prev, id) : undefined);
  const parts = ids.map((id) => stream.push(id));
  parts.push(stream.flush());
  return { parts, decodes };
}

const fixtures = [
  { name: 'stories260K (SentencePiece, byte fallback)', model: testData.storiesBin },
  { name: 'babyllama tok105 (SentencePiece, no byte fallback)', model: testData.babyBin },
  { name: 'kvq-tiny (byte-level BPE, added tokens)', model: testData.kvqTiny },
];

describe.each(fixtures)('appendedText: $name', ({ model }) => {
  it('is decode([prev, id]) minus decode([prev]) wherever it is defined', async () => {
    const { tokenizer } = await loadTokenizer(model);
    const ids = sampleIds(tokenizer.vocabSize, 300, 1);
    // stories260K: half of its 512 ids are byte-fallback pieces, which have no tail.
    expect(checkPairs(tokenizer, ids)).toBeGreaterThan(0.2 * ids.length * ids.length);
  });

  it('streams the same pieces as decoding every window, with a fraction of the decodes', async () => {
    const { tokenizer } = await loadTokenizer(model);
    const next = rng(2);
    const text = 'Once upon a time, naïve café — “quotes” 日本語 🦙🔥 and tabs\tand\nnewlines  double  spaces. ';
    const sequences = [
      tokenizer.encode(text.repeat(3)),
      Array.from({ length: 400 }, () => Math.floor(next() * tokenizer.vocabSize)),
      [...tokenizer.specialTokenIds, ...tokenizer.encode(text, { addSpecialTokens: false }), ...tokenizer.specialTokenIds],
    ];
    for (const ids of sequences) {
      for (const skip of [false, true]) {
        const slow = streamParts(tokenizer, ids, skip, false);
        const fast = streamParts(tokenizer, ids, skip, true);
        expect(fast.parts).toEqual(slow.parts);
        expect(fast.decodes).toBeLessThan(slow.decodes);
      }
    }
    // Plain text: after the first token, nearly every token's text comes without decoding.
    const typical = tokenizer.encode('Once upon a time, there was a little girl named Lily. She loved to play outside in the park. '.repeat(3));
    expect(streamParts(tokenizer, typical, true, true).decodes).toBeLessThan(typical.length / 4);
  });

  it('is undefined for added tokens and ids outside the vocabulary', async () => {
    const { tokenizer } = await loadTokenizer(model);
    for (const t of tokenizer.addedTokens) {
      expect(tokenizer.appendedText(t.id, 5)).toBeUndefined();
      expect(tokenizer.appendedText(5, t.id)).toBeUndefined();
    }
    expect(tokenizer.appendedText(5, tokenizer.vocabSize)).toBeUndefined();
    expect(tokenizer.appendedText(-1, 5)).toBeUndefined();
    expect(tokenizer.appendedText(5, 1.5)).toBeUndefined();
  });
});

describe('appendedText by decoder', () => {
  // A byte-level vocabulary with a byte-order mark (EF BB BF: 'ï»¿' in GPT-2's map), a lone lead byte (0xC3: 'Ã'),
  // '▁' pieces for the Metaspace decoders, and a piece that is a byte-fallback token.
  const vocab = ['<s>', 'h', 'i', 'hi', 'Ġ', 'ï»¿', 'ï»¿h', 'Ã', '©', '▁a', '▁', 'b▁', '<0x41>', '$&'];
  const json = (decoder: unknown): Record<string, unknown> => ({
    added_tokens: [{ id: 0, content: '<s>', special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, use_regex: true },
    post_processor: null,
    decoder,
    model: { type: 'BPE', vocab: Object.fromEntries(vocab.map((p, i) => [p, i])), merges: ['h i'] },
  });
  const sentencePiece = (strip: { start: number; stop: number }): unknown => ({
    type: 'Sequence',
    decoders: [
      { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
      { type: 'ByteFallback' },
      { type: 'Fuse' },
      { type: 'Strip', content: ' ', ...strip },
    ],
  });
  const all = vocab.map((_, i) => i);

  it.each([
    ['ByteLevel', { type: 'ByteLevel' }],
    ['Metaspace', { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true }],
    ['SentencePiece-style, leading strip', sentencePiece({ start: 1, stop: 0 })],
    ['SentencePiece-style, two leading spaces stripped', sentencePiece({ start: 2, stop: 0 })],
    ['Replace with a $ pattern in the content', { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: 'h' }, content: '$&$' }, { type: 'Fuse' }] }],
    ['Replace of a regex', { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { Regex: 'b.' }, content: '-' }, { type: 'Fuse' }] }],
  ])('%s: matches decode on every pair', (_, decoder) => {
    const tokenizer = Tokenizer.fromJson(json(decoder));
    expect(checkPairs(tokenizer, all)).toBeGreaterThan(0);
  });

  it('ByteLevel: no tail for a piece starting with a byte-order mark or holding part of a character', () => {
    const tokenizer = Tokenizer.fromJson(json({ type: 'ByteLevel' }));
    expect(tokenizer.decode([1, 5])).toBe('h\uFEFF'); // kept after the start of the text, dropped at its start
    expect(tokenizer.decode([5, 1])).toBe('h');
    expect(tokenizer.appendedText(1, 5)).toBeUndefined();
    expect(tokenizer.appendedText(1, 6)).toBeUndefined();
    expect(tokenizer.appendedText(1, 7)).toBeUndefined(); // 0xC3 alone
    expect(tokenizer.appendedText(7, 8)).toBeUndefined(); // after it, 0xA9 completes 'é'
    expect(tokenizer.appendedText(1, 2)).toBe('i');
  });

  it('SentencePiece-style: no tail for byte-fallback pieces, none after a piece that decodes to nothing', () => {
    const tokenizer = Tokenizer.fromJson(json(sentencePiece({ start: 1, stop: 0 })));
    expect(tokenizer.appendedText(1, 12)).toBeUndefined();
    expect(tokenizer.appendedText(12, 1)).toBeUndefined();
    expect(tokenizer.decode([10])).toBe(''); // '▁' alone: its space is stripped
    expect(tokenizer.appendedText(10, 9)).toBeUndefined();
    expect(tokenizer.appendedText(9, 10)).toBe(' ');
  });

  it.each([
    ['no decoder (pieces joined with spaces)', null],
    ['a trailing strip', sentencePiece({ start: 1, stop: 1 })],
    ['a Replace after Fuse', { type: 'Sequence', decoders: [{ type: 'Fuse' }, { type: 'Replace', pattern: { String: 'b▁' }, content: 'x' }] }],
    ['ByteLevel after other steps', { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteLevel' }] }],
  ])('%s: never defined (every window is decoded)', (_, decoder) => {
    const tokenizer = Tokenizer.fromJson(json(decoder));
    for (const prev of all) for (const id of all) expect(tokenizer.appendedText(prev, id)).toBeUndefined();
  });
});
