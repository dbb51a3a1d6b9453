import { readFileSync } from 'node:fs';

import { seededRandom } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';

import { parseLlama2cTokenizer, type Llama2cTokenizerFile } from '../formats/llama2c.js';
import { llama2cTokenizer } from '../load/llama2c.js';
import { engineErrorOf, testData } from '../testing/fixtures.js';
import { sentencePieceTokenizerJson, TokenType } from './sentencepiece.js';
import { Tokenizer } from './tokenizer.js';

/**
 * An independent, literal restatement of llama2.c's `encode` (run.c): BOS, a dummy-prefix " " piece, one piece
 * per UTF-8 character (or byte pieces id = byte + 3), then repeatedly merge the adjacent pair whose concatenation
 * is a piece with the highest score (first such pair on ties). Quadratic, as the original.
 */
function llama2cEncode(tok: Llama2cTokenizerFile, text: string): number[] {
  const lookup = new Map<string, number>();
  tok.pieces.forEach((p, i) => {
    if (!lookup.has(p)) lookup.set(p, i);
  });
  const ids: number[] = [1];
  if (text.length > 0) ids.push(lookup.get(' ')!);
  for (const ch of text) {
    const id = lookup.get(ch);
    if (id !== undefined) ids.push(id);
    else for (const b of new TextEncoder().encode(ch)) ids.push(b + 3);
  }
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i + 1 < ids.length; i++) {
      const id = lookup.get(tok.pieces[ids[i]!]! + tok.pieces[ids[i + 1]!]!);
      if (id !== undefined && tok.scores[id]! > bestScore) {
        bestScore = tok.scores[id]!;
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx < 0) break;
    ids.splice(bestIdx, 2, bestId);
  }
  return ids;
}

describe('SentencePiece BPE vs llama2.c encode (stories260K tok512.bin)', () => {
  const bytes = readFileSync(testData.storiesTok);
  const raw = parseLlama2cTokenizer(bytes, 'tok512.bin', 512);
  const tokenizer = llama2cTokenizer(bytes, 'tok512.bin', 512);

  it('agrees with the literal llama2.c algorithm on every line of the evaluation text', () => {
    const lines = readFileSync(testData.evalText, 'utf8').split('\n').filter((l) => l.length > 0).slice(0, 120);
    for (const line of lines) expect(tokenizer.encode(line)).toEqual(llama2cEncode(raw, line));
  });

  it('agrees on seeded random strings mixing vocabulary pieces, spaces, digits and non-ASCII characters', () => {
    const rand = seededRandom(7);
    const pieces = raw.pieces.filter((p) => !p.includes('<') && !p.includes('\n'));
    const extra = [' ', '  ', '\n', '7', 'é', '日', '🦙', '!', 'The', 'the'];
    for (let n = 0; n < 300; n++) {
      let text = '';
      const len = 1 + Math.floor(rand() * 12);
      for (let i = 0; i < len; i++) {
        text += rand() < 0.7 ? pieces[Math.floor(rand() * pieces.length)] : extra[Math.floor(rand() * extra.length)];
      }
      expect(tokenizer.encode(text)).toEqual(llama2cEncode(raw, text));
    }
  });

  it('writes merges ranked by the merged piece score and a Llama-2-style pipeline', () => {
    const json = tokenizer.json as { model: { merges: string[][]; byte_fallback: boolean }; normalizer: unknown };
    expect(json.model.byte_fallback).toBe(true);
    expect(json.model.merges[0]).toEqual(['▁', 't']); // ' t' has the best score (-0) of all merged pieces
    expect(json.model.merges[1]).toEqual(['h', 'e']);
    expect(tokenizer.idToToken(1)).toBe('<s>');
    expect(tokenizer.idToToken(261)).toBe('▁a');
  });
});

describe('sentencePieceTokenizerJson', () => {
  const vocab = {
    pieces: ['<unk>', '<s>', '</s>', '▁', 'a', 'b', '▁a', 'ab', '▁ab'],
    scores: [0, 0, 0, -1, -2, -3, -4, -5, -6],
    types: [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, 1, 1, 1, 1, 1, 1],
    bosId: 1,
    eosId: 2,
    addBos: true,
    addEos: true,
    file: 'test',
  };

  it('adds BOS/EOS per the flags and merges by score', () => {
    const { tokenizer, config } = sentencePieceTokenizerJson(vocab);
    const t = Tokenizer.fromJson(tokenizer, { config });
    // '▁a' (-4) beats 'ab' (-5): ▁ a b → ▁a b; then ▁a + b = '▁ab'.
    expect(t.encode('ab')).toEqual([1, 8, 2]);
    expect(t.decode([1, 8, 2], { skipSpecialTokens: true })).toBe('ab');
    expect(t.addsEos).toBe(true);
    // Without byte pieces there is no byte fallback: unknown characters become <unk>.
    expect(t.encode('aé', { addSpecialTokens: false })).toEqual([6, 0]);
  });

  it('rejects duplicate pieces and mismatched arrays', () => {
    expect(engineErrorOf(() => sentencePieceTokenizerJson({ ...vocab, pieces: [...vocab.pieces.slice(0, 8), 'ab'] })).code).toBe('MALFORMED');
    expect(engineErrorOf(() => sentencePieceTokenizerJson({ ...vocab, scores: [0] })).code).toBe('MALFORMED');
  });
});
