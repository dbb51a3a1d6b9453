import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { loadTokenizer } from '../load/load-model.js';
import { engineErrorOf, testData } from '../testing/fixtures.js';
import { LLAMA3_PATTERN } from './regex.js';
import { Tokenizer } from './tokenizer.js';

interface Reference {
  greedy: Array<{ prompt: string; prompt_token_ids: number[]; token_ids: number[]; text: string }>;
  nll?: Array<{ text: string; token_ids: number[] }>;
}

const readJson = (path: string): Reference => JSON.parse(readFileSync(path, 'utf8')) as Reference;

/** Every way the test models' tokenizers can be loaded, with the reference file they must reproduce. */
const cases = [
  { name: 'stories260K llama2.c tok512.bin', model: testData.storiesBin, ref: testData.refStories, greedyIncludesPrompt: true },
  { name: 'stories260K GGUF metadata', model: testData.storiesGguf, ref: testData.refStories, greedyIncludesPrompt: true },
  { name: 'babyllama llama2.c tok105.bin', model: testData.babyBin, ref: testData.refBaby, greedyIncludesPrompt: true },
  { name: 'kvq-tiny tokenizer.json', model: testData.kvqTiny, ref: testData.refKvqTiny, greedyIncludesPrompt: false },
];

describe.each(cases)('$name reproduces the reference token ids', ({ model, ref }) => {
  it('encodes every reference prompt and NLL text (BOS added)', async () => {
    const { tokenizer } = await loadTokenizer(model);
    const reference = readJson(ref);
    for (const g of reference.greedy) expect(tokenizer.encode(g.prompt)).toEqual(g.prompt_token_ids);
    for (const n of reference.nll ?? []) expect(tokenizer.encode(n.text)).toEqual(n.token_ids);
  });

  it('decodes the reference greedy outputs to the reference text', async () => {
    const { tokenizer } = await loadTokenizer(model);
    for (const g of readJson(ref).greedy) {
      expect(tokenizer.decode(g.token_ids, { skipSpecialTokens: true })).toBe(g.text);
    }
  });
});

describe('stories260K decoding', () => {
  it('greedy output from BOS starts with the documented story', async () => {
    const { tokenizer } = await loadTokenizer(testData.storiesBin);
    const ids = readJson(testData.refStories).greedy[0]!.token_ids;
    expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toMatch(
      /^Once upon a time, there was a little girl named Lily\. She loved to play outside in the park\./,
    );
    // Without skipping, BOS shows as its token string, as in Hugging Face's Llama tokenizer.
    expect(tokenizer.decode(ids.slice(0, 3))).toBe('<s> Once upon');
  });
});

function roundTrip(tokenizer: Tokenizer, text: string): void {
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  expect(tokenizer.decode(ids)).toBe(text);
  expect(ids.every((id) => id >= 0 && id < tokenizer.vocabSize)).toBe(true);
}

function streamed(tokenizer: Tokenizer, ids: readonly number[], skipSpecialTokens = false): string {
  const stream = tokenizer.decodeStream({ skipSpecialTokens });
  let text = '';
  for (const id of ids) {
    const piece = stream.push(id);
    expect(piece.includes('\uFFFD')).toBe(false);
    text += piece;
  }
  return text + stream.flush();
}

const MULTIBYTE = 'naïve café — “quotes” 日本語 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 emoji 🦙🔥 and tabs\tand\nnewlines  double  spaces ';

describe('kvq-tiny byte-level BPE', () => {
  it('round-trips the evaluation text and multi-byte text exactly', async () => {
    const { tokenizer } = await loadTokenizer(testData.kvqTiny);
    const text = readFileSync(testData.evalText, 'utf8');
    roundTrip(tokenizer, text);
    roundTrip(tokenizer, MULTIBYTE);
    roundTrip(tokenizer, ' leading space and trailing  ');
  });

  it('counts the 2296 predicted tokens of the first 30 evaluation documents, as the reference NLL run did', async () => {
    const { tokenizer } = await loadTokenizer(testData.kvqTiny);
    const docs = readFileSync(testData.evalText, 'utf8')
      .split(/\n\s*\n/)
      .filter((d) => d.trim().length > 0)
      .slice(0, 30);
    const predicted = docs.reduce((sum, d) => sum + tokenizer.encode(d).length - 1, 0);
    expect(predicted).toBe(2296);
  });

  it('streams text whose concatenation equals decode(), never emitting half a character', async () => {
    const { tokenizer } = await loadTokenizer(testData.kvqTiny);
    const text = readFileSync(testData.evalText, 'utf8').slice(0, 4000) + MULTIBYTE;
    const ids = tokenizer.encode(text);
    expect(streamed(tokenizer, ids)).toBe(tokenizer.decode(ids));
    expect(streamed(tokenizer, ids, true)).toBe(text);
    // Emoji are split over several byte tokens in this 2048-token vocabulary: the stream holds them back.
    const emoji = tokenizer.encode('🦙', { addSpecialTokens: false });
    expect(emoji.length).toBeGreaterThan(1);
    const stream = tokenizer.decodeStream();
    const parts = emoji.map((id) => stream.push(id));
    expect(parts.slice(0, -1).every((p) => p === '')).toBe(true);
    expect(parts.at(-1)).toBe('🦙');
  });

  it('recognises the ChatML special tokens written in text and exposes BOS/EOS ids', async () => {
    const { tokenizer } = await loadTokenizer(testData.kvqTiny);
    expect(tokenizer.bosTokenId).toBe(0);
    expect(tokenizer.eosTokenIds).toEqual([1, 3]); // generation_config.json's list wins over tokenizer_config's eos
    expect(tokenizer.addsBos).toBe(true);
    const ids = tokenizer.encode('<|im_start|>user\nHi<|im_end|>\n', { addSpecialTokens: false });
    expect(ids[0]).toBe(2);
    expect(ids).toContain(3);
    expect(tokenizer.decode(ids)).toBe('<|im_start|>user\nHi<|im_end|>\n');
    expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe('user\nHi\n');
    expect(tokenizer.encode('', { addSpecialTokens: true })).toEqual([0]);
    expect(tokenizer.tokenToId('<|end_of_text|>')).toBe(1);
    expect(tokenizer.idToToken(2)).toBe('<|im_start|>');
  });

  it('rejects ids outside the vocabulary with a typed error', async () => {
    const { tokenizer } = await loadTokenizer(testData.kvqTiny);
    const e = engineErrorOf(() => tokenizer.decode([5, tokenizer.vocabSize]));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toContain(String(tokenizer.vocabSize));
    expect(engineErrorOf(() => tokenizer.decode([-1])).message).toContain('-1');
  });
});

describe('SentencePiece-style BPE with byte fallback (stories260K)', () => {
  it('round-trips text with characters outside the vocabulary through byte tokens', async () => {
    const { tokenizer } = await loadTokenizer(testData.storiesBin);
    const text = readFileSync(testData.evalText, 'utf8').slice(0, 6000);
    const ids = tokenizer.encode(text);
    expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe(text);
    const unusual = tokenizer.encode('日本 🦙', { addSpecialTokens: false });
    // Each byte of a character missing from the 512-piece vocabulary becomes <0xXX> = byte + 3.
    expect(unusual).toContain(0xe6 + 3);
    expect(tokenizer.decode(unusual)).toBe('日本 🦙');
  });

  it('streams SentencePiece text without losing the spaces the decoder strips from a first token', async () => {
    const { tokenizer } = await loadTokenizer(testData.storiesBin);
    const text = 'Once upon a time, 日本 🦙 there was\na dog.';
    const ids = tokenizer.encode(text);
    expect(streamed(tokenizer, ids, true)).toBe(text);
    expect(streamed(tokenizer, ids)).toBe(tokenizer.decode(ids));
  });
});

describe('character-level vocabulary without byte fallback (babyllama tok105)', () => {
  it('maps characters outside the vocabulary to <unk> (consecutive ones fused), as Hugging Face BPE does', async () => {
    const { tokenizer } = await loadTokenizer(testData.babyBin);
    expect(tokenizer.vocabSize).toBe(105);
    const ids = tokenizer.encode('a日本b', { addSpecialTokens: false });
    expect(ids.filter((id) => id === 0)).toHaveLength(1);
    expect(tokenizer.decode(tokenizer.encode('The cat.', { addSpecialTokens: false }))).toBe('The cat.');
  });
});

describe('Llama-3-shaped tokenizer.json (Split regex + ByteLevel without regex, ignore_merges)', () => {
  it('splits digits in groups of three and contractions case-insensitively, and round-trips', async () => {
    const { tokenizer: base } = await loadTokenizer(testData.kvqTiny);
    const json = structuredClone(base.json) as Record<string, unknown> & { model: Record<string, unknown> };
    json.pre_tokenizer = {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    };
    json.post_processor = { type: 'Sequence', processors: [{ type: 'ByteLevel', trim_offsets: false }, json.post_processor] };
    json.model = { ...json.model, ignore_merges: true };
    const llama3 = Tokenizer.fromJson(json);
    const digits = llama3.encode('12345', { addSpecialTokens: false }).map((id) => llama3.idToToken(id));
    expect(digits.join('|')).toMatch(/^1\|?2\|?3\|4\|?5$/); // "123" and "45" never merge across the split
    expect(base.encode('12345', { addSpecialTokens: false }).map((id) => base.idToToken(id)).join('')).toBe('12345');
    const text = "HE'LL say: 2024 was 12345 lines.\n\n  Done";
    expect(llama3.decode(llama3.encode(text), { skipSpecialTokens: true })).toBe(text);
    expect(llama3.encode(text)[0]).toBe(0);
  });
});

describe('tokenBytes (raw bytes of a token, OpenAI logprobs `bytes`)', () => {
  const utf8 = (s: string) => [...Buffer.from(s, 'utf8')];
  const concat = (tokenizer: Tokenizer, ids: readonly number[]) => ids.flatMap((id) => [...tokenizer.tokenBytes(id)]);

  it('kvq-tiny (byte-level BPE): each of the 256 single-byte pieces is its byte; pieces concatenate to the exact UTF-8 of any text', async () => {
    const { tokenizer } = await loadTokenizer(testData.kvqTiny);
    const seen = new Set<number>();
    for (let id = 0; id < tokenizer.vocabSize; id++) {
      const b = tokenizer.tokenBytes(id);
      if (b.length === 1 && !tokenizer.specialTokenIds.has(id)) seen.add(b[0]!);
    }
    expect(seen.size).toBe(256);
    const lead = tokenizer.tokenToId('Ã')!; // GPT-2's char for byte 0xC3, a UTF-8 lead byte
    expect([...tokenizer.tokenBytes(lead)]).toEqual([0xc3]);
    expect(tokenizer.decode([lead])).toBe('\uFFFD'); // what decode shows for half a character
    expect([...tokenizer.tokenBytes(tokenizer.tokenToId('Ġ')!)]).toEqual([0x20]);
    for (const text of [MULTIBYTE, readFileSync(testData.evalText, 'utf8').slice(0, 3000)]) {
      const ids = tokenizer.encode(text, { addSpecialTokens: false });
      expect(concat(tokenizer, ids)).toEqual(utf8(text));
    }
    // Tokens of a multi-byte text that hold part of a character: raw bytes, where decode([id]) has U+FFFD.
    const ids = tokenizer.encode(MULTIBYTE, { addSpecialTokens: false });
    const partial = ids.filter((id) => tokenizer.decode([id]).includes('\uFFFD'));
    expect(partial.length).toBeGreaterThan(0);
    for (const id of partial) expect(tokenizer.tokenBytes(id)).not.toContain(0xef); // not U+FFFD's EF BF BD
    // Added (special) tokens are the UTF-8 of their content.
    expect([...tokenizer.tokenBytes(0)]).toEqual(utf8('<|begin_of_text|>'));
  });

  it('stories260K (SentencePiece, byte fallback): <0xNN> tokens are byte NN, ▁ is a space, pieces concatenate to the UTF-8 of the text', async () => {
    const { tokenizer } = await loadTokenizer(testData.storiesBin);
    for (let b = 0; b < 256; b++) {
      const id = tokenizer.tokenToId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!;
      expect(id, `byte ${b}`).toBeDefined();
      expect([...tokenizer.tokenBytes(id)]).toEqual([b]);
    }
    const once = tokenizer.tokenToId('▁Once')!;
    expect([...tokenizer.tokenBytes(once)]).toEqual(utf8(' Once'));
    expect([...tokenizer.tokenBytes(tokenizer.bosTokenId!)]).toEqual(utf8(tokenizer.idToToken(tokenizer.bosTokenId!)!));
    const text = 'Once upon a time — café 日本 🦙';
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    // SentencePiece prepends '▁' to the text, which decode strips and the raw bytes keep.
    expect(concat(tokenizer, ids)).toEqual(utf8(` ${text}`));
    const partial = ids.filter((id) => tokenizer.decode([id]).includes('\uFFFD'));
    expect(partial.length).toBeGreaterThan(3);
    expect(partial.every((id) => tokenizer.tokenBytes(id).length === 1)).toBe(true);
    expect(() => tokenizer.tokenBytes(tokenizer.vocabSize)).toThrow(/outside the vocabulary/);
  });
});
