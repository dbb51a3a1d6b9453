import { describe, expect, it } from 'vitest';

import { engineErrorOf } from '../testing/fixtures.js';
import { BpeModel } from './bpe.js';
import { byteLevelChar, byteLevelToBytes, bytesToByteLevel } from './byte-level.js';
import { buildDecoder, buildNormalizer, buildPreTokenizer, splitWith } from './components.js';
import { compileTokenizerRegex, GPT2_PATTERN, LLAMA3_PATTERN, QWEN2_PATTERN } from './regex.js';
import { Tokenizer } from './tokenizer.js';

const matches = (re: RegExp, text: string): string[] => [...text.matchAll(re)].map((m) => m[0]);

describe('tokenizer regexes', () => {
  it('rewrites (?i:...) so that contractions match in any case (Llama 3)', () => {
    const re = compileTokenizerRegex(LLAMA3_PATTERN);
    expect(matches(re, "I'M here 12345 'S")).toEqual(['I', "'M", ' here', ' ', '123', '45', " '", 'S']);
    expect(re.source).not.toContain('(?i:');
  });

  it('splits digits one by one for Qwen2 and greedily for GPT-2', () => {
    expect(matches(compileTokenizerRegex(QWEN2_PATTERN), 'x 2024')).toEqual(['x', ' ', '2', '0', '2', '4']);
    expect(matches(compileTokenizerRegex(GPT2_PATTERN), "we're 2024  ok")).toEqual(['we', "'re", ' 2024', ' ', ' ok']);
  });

  it('refuses constructs JavaScript cannot run, with a typed error', () => {
    expect(engineErrorOf(() => compileTokenizerRegex('(?>ab)c')).code).toBe('UNSUPPORTED_TOKENIZER');
    expect(engineErrorOf(() => compileTokenizerRegex('a++')).code).toBe('UNSUPPORTED_TOKENIZER');
    expect(engineErrorOf(() => compileTokenizerRegex('(?i:[a-z])')).code).toBe('UNSUPPORTED_TOKENIZER');
  });
});

describe('split behaviours (Hugging Face SplitDelimiterBehavior)', () => {
  const re = /-/gu;
  it.each([
    ['Removed', ['a', 'b', 'c']],
    ['Isolated', ['a', '-', 'b', '-', '-', 'c']],
    ['MergedWithPrevious', ['a-', 'b-', '-', 'c']],
    ['MergedWithNext', ['a', '-b', '-', '-c']],
    ['Contiguous', ['a', '-', 'b', '--', 'c']],
  ] as const)('%s', (behavior, expected) => {
    expect(splitWith('a-b--c', re, behavior)).toEqual(expected);
  });

  it('inverts match and gap', () => {
    expect(splitWith('ab cd', /\w+/gu, 'Removed', true)).toEqual(['ab', 'cd']);
  });
});

describe('byte-level alphabet', () => {
  it('maps all 256 bytes to distinct characters and back', () => {
    const chars = Array.from({ length: 256 }, (_, b) => byteLevelChar(b));
    expect(new Set(chars).size).toBe(256);
    expect(byteLevelToBytes(chars.join(''))).toEqual(Array.from({ length: 256 }, (_, b) => b));
    expect(byteLevelChar(0x20)).toBe('Ġ');
    expect(byteLevelChar(0x0a)).toBe('Ċ');
    expect(bytesToByteLevel('é')).toBe('Ã©');
    expect(byteLevelToBytes('a b')).toBeUndefined();
  });
});

describe('BPE model', () => {
  const vocab = new Map(['a', 'b', 'c', 'ab', 'bc', 'abc', 'aa', '<unk>', '<0x41>', '<0xC3>', '<0xA9>'].map((p, i) => [p, i]));
  const id = (p: string): number => vocab.get(p)!;

  it('applies the lowest-ranked merge first', () => {
    const bcFirst = new BpeModel({ vocab, merges: [['b', 'c'], ['a', 'b'], ['a', 'bc']] });
    expect(bcFirst.tokenize('abc')).toEqual([id('abc')]);
    const abOnly = new BpeModel({ vocab, merges: [['a', 'b'], ['b', 'c']] });
    expect(abOnly.tokenize('abc')).toEqual([id('ab'), id('c')]);
  });

  it('breaks rank ties leftmost first', () => {
    const model = new BpeModel({ vocab, merges: [['a', 'a']] });
    expect(model.tokenize('aaa')).toEqual([id('aa'), id('a')]);
  });

  it('falls back to byte pieces, then to a fused unknown token', () => {
    const withBytes = new BpeModel({ vocab, merges: [], byteFallback: true, unkToken: '<unk>', fuseUnk: true });
    expect(withBytes.tokenize('éa')).toEqual([id('<0xC3>'), id('<0xA9>'), id('a')]);
    // 'ü' needs <0xC3><0xBC>; <0xBC> is missing, so the character is unknown; consecutive unknowns fuse.
    expect(withBytes.tokenize('üüa')).toEqual([id('<unk>'), id('a')]);
    const noFuse = new BpeModel({ vocab, merges: [], unkToken: '<unk>' });
    expect(noFuse.tokenize('üüa')).toEqual([id('<unk>'), id('<unk>'), id('a')]);
  });

  it('emits whole-word pieces directly with ignore_merges', () => {
    const merges: Array<[string, string]> = [['a', 'b']];
    expect(new BpeModel({ vocab, merges, ignoreMerges: true }).tokenize('bc')).toEqual([id('bc')]);
    expect(new BpeModel({ vocab, merges }).tokenize('bc')).toEqual([id('b'), id('c')]);
  });

  it('rejects merges of pieces that are not in the vocabulary', () => {
    const e = engineErrorOf(() => new BpeModel({ vocab, merges: [['c', 'a']] }));
    expect(e.code).toBe('MALFORMED');
    expect(e.message).toContain('"ca"');
  });
});

describe('normalizers, pre-tokenizers and decoders', () => {
  it('Prepend leaves empty text empty; Replace replaces every occurrence', () => {
    const n = buildNormalizer({ type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] });
    expect(n('')).toBe('');
    expect(n('a b  c')).toBe('▁a▁b▁▁c');
  });

  it('Metaspace prepends only to the first segment with prepend_scheme "first"', () => {
    const p = buildPreTokenizer({ type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: true });
    expect(p(['hello big world'], true)).toEqual(['▁hello', '▁big', '▁world']);
    expect(p(['hello'], false)).toEqual(['hello']);
  });

  it('ByteFallback turns invalid byte runs into one U+FFFD per byte; Strip and Fuse follow HF', () => {
    const d = buildDecoder({
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    });
    expect(d(['▁a', '<0xC3>', '<0xA9>', '▁b']).join('')).toBe('aé b');
    expect(d(['▁a', '<0xC3>', '<0x41>']).join('')).toBe('a\uFFFD\uFFFD');
  });

  it('names unsupported components in typed errors', () => {
    const e = engineErrorOf(() => buildPreTokenizer({ type: 'BertPreTokenizer' }));
    expect(e.code).toBe('UNSUPPORTED_TOKENIZER');
    expect(e.message).toContain('BertPreTokenizer');
    expect(engineErrorOf(() => buildNormalizer({ type: 'Precompiled' })).field).toBe('normalizer.type');
  });
});

describe('Tokenizer.fromJson', () => {
  const base = (): Record<string, unknown> => ({
    added_tokens: [{ id: 0, content: '<s>', special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [0], tokens: ['<s>'] } },
    },
    decoder: { type: 'ByteLevel' },
    model: { type: 'BPE', vocab: { '<s>': 0, h: 1, i: 2, hi: 3, Ġ: 4 }, merges: ['h i'] },
  });

  it('builds a working byte-level tokenizer from a minimal tokenizer.json', () => {
    const t = Tokenizer.fromJson(base());
    expect(t.encode('hi hi')).toEqual([0, 3, 4, 3]);
    expect(t.decode([0, 3, 4, 3], { skipSpecialTokens: true })).toBe('hi hi');
    expect(t.vocabSize).toBe(5);
  });

  it('lets tokenizer_config.json add_bos_token override the post-processor', () => {
    expect(Tokenizer.fromJson(base(), { config: { bos_token: '<s>', add_bos_token: false } }).encode('hi')).toEqual([3]);
    const json = { ...base(), post_processor: null };
    expect(Tokenizer.fromJson(json, { config: { bos_token: '<s>', add_bos_token: true } }).encode('hi')).toEqual([0, 3]);
  });

  it('reports unsupported models and malformed fields by JSON path', () => {
    const wordPiece = engineErrorOf(() => Tokenizer.fromJson({ ...base(), model: { type: 'WordPiece', vocab: {} } }, { file: 'x/tokenizer.json' }));
    expect(wordPiece.code).toBe('UNSUPPORTED_TOKENIZER');
    expect(wordPiece.message).toContain('x/tokenizer.json');
    expect(wordPiece.message).toContain('WordPiece');
    const gap = engineErrorOf(() => Tokenizer.fromJson({ ...base(), model: { type: 'BPE', vocab: { a: 0, b: 2 }, merges: [] }, added_tokens: [] }));
    expect(gap.code).toBe('MALFORMED');
    expect(gap.message).toContain('id 1');
    expect(engineErrorOf(() => Tokenizer.fromJson([])).code).toBe('MALFORMED');
  });
});
