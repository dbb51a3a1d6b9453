import { describe, expect, it } from 'vitest';
import { BlockHasher, toHex } from './hash.js';
import { sha256 } from './sha256.js';
import { errorCode, range } from './test-helpers.js';

const fmt = { dtype: 'e4m3fn', scaleVersion: 0 };

describe('BlockHasher', () => {
  it('is deterministic for a seed and random without one', () => {
    const a = new BlockHasher({ seed: 's' });
    const b = new BlockHasher({ seed: 's' });
    expect(a.rootHash).toBe(b.rootHash);
    expect(a.rootHash).toMatch(/^[0-9a-f]{64}$/);
    expect(new BlockHasher({ seed: 't' }).rootHash).not.toBe(a.rootHash);
    expect(new BlockHasher().rootHash).not.toBe(new BlockHasher().rootHash);
    const t = range(0, 16);
    expect(a.hashBlock(undefined, fmt, t, 0, 16, undefined)).toBe(b.hashBlock(undefined, fmt, t, 0, 16, undefined));
  });

  it('covers parent, tokens, dtype, scale version, extra keys and salt', () => {
    const h = new BlockHasher({ seed: 'x' });
    const t = range(100, 32);
    const base = h.hashBlock(undefined, fmt, t, 0, 16, undefined);
    const variants = [
      h.hashBlock(base, fmt, t, 0, 16, undefined), // different parent
      h.hashBlock(undefined, fmt, t, 16, 32, undefined), // different tokens
      h.hashBlock(undefined, { dtype: 'bf16', scaleVersion: 0 }, t, 0, 16, undefined),
      h.hashBlock(undefined, { dtype: 'e4m3fn', scaleVersion: 1 }, t, 0, 16, undefined),
      h.hashBlock(undefined, fmt, t, 0, 16, ['lora-a']),
      h.hashBlock(undefined, fmt, t, 0, 16, [1]),
      h.hashBlock(undefined, fmt, t, 0, 16, ['1']), // string vs number keys differ
      h.hashBlock(undefined, fmt, t, 0, 16, undefined, 'salt'),
      h.hashBlock(undefined, fmt, t, 0, 16, ['salt']), // a key is not a salt
      h.hashBlock(undefined, fmt, t, 0, 15, undefined), // length counts
    ];
    expect(new Set([base, ...variants]).size).toBe(variants.length + 1);
    // an empty key list equals no keys
    expect(h.hashBlock(undefined, fmt, t, 0, 16, [])).toBe(base);
  });

  it('does not confuse token boundaries (u32 encoding)', () => {
    const h = new BlockHasher({ seed: 'x' });
    expect(h.hashBlock(undefined, fmt, [1, 256], 0, 2, undefined)).not.toBe(
      h.hashBlock(undefined, fmt, [256, 1], 0, 2, undefined),
    );
    expect(h.hashBlock(undefined, fmt, [0xffffffff], 0, 1, undefined)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('accepts a custom hash function and validates its output', () => {
    let calls = 0;
    const h = new BlockHasher({
      seed: 'x',
      hashFn: (d) => {
        calls++;
        return sha256(d).subarray(0, 16);
      },
    });
    expect(h.rootHash).toHaveLength(32);
    h.hashBlock(undefined, fmt, [1, 2], 0, 2, undefined);
    expect(calls).toBe(2);
    expect(errorCode(() => new BlockHasher({ hashFn: () => new Uint8Array(4) }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new BlockHasher({ seed: 3 as never }))).toBe('INVALID_ARGUMENT');
  });

  it('toHex', () => {
    expect(toHex(Uint8Array.of(0, 1, 0xab, 0xff))).toBe('0001abff');
  });
});
