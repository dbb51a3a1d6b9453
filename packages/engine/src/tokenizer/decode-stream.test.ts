import { describe, expect, it } from 'vitest';
import { DecodeStream } from './decode-stream.js';

// A SentencePiece-like decoder: '▁' is a space, the text's first leading space is stripped, and ids 100..103 are the
// four UTF-8 bytes of '🦙' (an incomplete sequence decodes as U+FFFD).
const PIECES = ['▁the', '▁llama', 's', '▁ate', '▁grass', '.'];
const LLAMA = new TextEncoder().encode('🦙');
function decode(ids: readonly number[]): string {
  const bytes: number[] = [];
  for (const id of ids) {
    if (id >= 100) bytes.push(LLAMA[id - 100]!);
    else bytes.push(...new TextEncoder().encode(PIECES[id]!.replaceAll('▁', ' ')));
  }
  const text = new TextDecoder().decode(Uint8Array.from(bytes));
  return text.startsWith(' ') ? text.slice(1) : text;
}

function run(ids: readonly number[], single?: Map<number, string>): { parts: string[]; calls: number } {
  let calls = 0;
  const stream = new DecodeStream((w) => (calls++, decode(w)), single);
  const parts = ids.map((id) => stream.push(id));
  parts.push(stream.flush());
  return { parts, calls };
}

describe('DecodeStream', () => {
  const ids = [0, 1, 2, 3, 0, 4, 100, 101, 102, 103, 5, 1, 1, 1, 1, 1];

  it('returns text whose concatenation is decode(all), holding back incomplete characters', () => {
    const { parts } = run(ids);
    expect(parts.join('')).toBe(decode(ids));
    expect(parts.slice(6, 9)).toEqual(['', '', '']); // the first three bytes of the emoji wait for the fourth
  });

  it('with a shared one-id cache: the same pieces, one decode per token once the cache is warm', () => {
    const plain = run(ids);
    const single = new Map<number, string>();
    const cold = run(ids, single);
    const warm = run(ids, single);
    expect(cold.parts).toEqual(plain.parts);
    expect(warm.parts).toEqual(plain.parts);
    expect(plain.calls).toBe(2 * ids.length);
    // Warm: the one-id windows before each token come from the cache; only multi-id windows (after the held-back
    // bytes) and the windows with the new token are decoded.
    expect(warm.calls).toBeLessThan(ids.length + 6);
    expect(single.get(1)).toBe(decode([1]));
  });
});
