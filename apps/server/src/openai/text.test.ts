import { loadTokenizer, type TokenLogprobs } from '@kvq/engine';
import { fixturePath } from '@kvq/fixtures';
import { modelTinyPath } from '@kvq/model-tiny';
import { describe, expect, it } from 'vitest';
import { chatLogprobs, promptLogprobsJson } from './text.js';

const entry = (tokenId: number, top: number[] = []): TokenLogprobs =>
  ({ tokenId, logprob: -1, rank: 1, top: top.map((id, i) => ({ tokenId: id, logprob: -2 - i, rank: i + 1 })) });

describe('chatLogprobs bytes on the real vocabularies', () => {
  for (const [name, path] of [
    ['kvq-tiny (byte-level BPE)', modelTinyPath],
    ['stories260K (SentencePiece, byte fallback)', fixturePath('models/stories260K/stories260K.bin')],
  ] as const) {
    it(`${name}: the bytes of the tokens of "日本🦙" join into its UTF-8; whole tokens keep the UTF-8 of their text`, async () => {
      const { tokenizer } = await loadTokenizer(path);
      const text = '日本🦙';
      const ids = tokenizer.encode(text, { addSpecialTokens: false }).filter((id) => tokenizer.decode([id]).trim() !== '');
      const lps = chatLogprobs(tokenizer, ids.map((id) => entry(id, [id])), 1);
      expect(lps.some((l) => l.token.includes('\uFFFD'))).toBe(true); // some tokens hold part of a character
      expect(Buffer.from(lps.flatMap((l) => l.bytes)).toString('utf8')).toBe(text);
      for (const l of lps) expect(l.top_logprobs[0]!.bytes).toEqual(l.bytes);
      const word = tokenizer.encode(' house', { addSpecialTokens: false }).at(-1)!;
      const [w] = chatLogprobs(tokenizer, [entry(word)], 0);
      expect(w!.bytes).toEqual([...Buffer.from(w!.token, 'utf8')]);
    });
  }
});

describe('promptLogprobsJson', () => {
  it('null for the first position, the token and its alternatives by id, -inf clamped to -9999 (vLLM)', () => {
    const e = { tokenId: 5, logprob: -Infinity, rank: 9, decodedToken: 'x', top: [{ tokenId: 7, logprob: -0.5, rank: 1, decodedToken: 'y' }] } satisfies TokenLogprobs;
    expect(promptLogprobsJson([undefined, e])).toEqual([null, { '5': { logprob: -9999, rank: 9, decoded_token: 'x' }, '7': { logprob: -0.5, rank: 1, decoded_token: 'y' } }]);
  });
});
