import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixtures } from '@kvq/fixtures';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { KV_STORAGE_DTYPES } from './dtype.js';
import { kvBytesPerBlock, kvBytesPerToken, kvPageBytes, kvScaleBytes, maxConcurrency, planKvCache } from './plan.js';
import { errorCode } from './test-helpers.js';

const llama8b = { numLayers: 32, numKvHeads: 8, headSize: 128, numHeads: 32 };
const GiB = 2 ** 30;

describe('capacity planning', () => {
  it('reproduces the Llama-3.1-8B worked example (spec §6.1)', () => {
    expect(kvBytesPerToken(llama8b, { dtype: 'bf16' })).toBe(131_072);
    expect(kvBytesPerToken(llama8b, { dtype: 'e4m3fn' })).toBe(65_536);
    // NOTE: the spec says "block of 16 → 1 MiB (BF16) / 0.5 MiB (FP8)"; 16 × 128 KiB is 2 MiB (16 × 64 KiB = 1 MiB).
    expect(kvBytesPerBlock(llama8b, { dtype: 'bf16' })).toBe(2 * 2 ** 20);
    expect(kvBytesPerBlock(llama8b, { dtype: 'e4m3fn' })).toBe(2 ** 20);
    expect(kvPageBytes(llama8b, { dtype: 'bf16' })).toBe(2 * 16 * 8 * 128 * 2);
    expect(kvBytesPerToken(llama8b, { dtype: 'f32' })).toBe(262_144);
  });

  it('is consistent with the vLLM docs measurement for Qwen3-4B (83,488 BF16 vs 166,992 FP8 tokens)', () => {
    // Qwen3-4B config.json: 36 layers, 8 KV heads, head_dim 128. The docs give the budget rounded
    // (11.47 GiB); a budget in that rounding range reproduces both figures, 2× up to one block.
    const qwen3_4b = { numLayers: 36, numKvHeads: 8, headSize: 128 };
    const memoryBytes = 10_437 * 16 * 73_728; // 11.466 GiB
    expect(memoryBytes / GiB).toBeCloseTo(11.47, 2);
    expect(planKvCache({ model: qwen3_4b, dtype: 'bf16', memoryBytes }).numTokens).toBe(83_488);
    expect(planKvCache({ model: qwen3_4b, dtype: 'e4m3fn', memoryBytes, scales: 'none' }).numTokens).toBe(166_992);
  });

  it('plans the kvq-tiny model from its config.json', () => {
    const cfg = JSON.parse(readFileSync(join(fixtures.kvqTinyDir, 'config.json'), 'utf8')) as Record<string, number>;
    const model = {
      numLayers: cfg.num_hidden_layers!,
      numKvHeads: cfg.num_key_value_heads!,
      headSize: cfg.head_dim!,
      numHeads: cfg.num_attention_heads!,
    };
    expect(kvBytesPerToken(model, { dtype: 'bf16' })).toBe(2 * 6 * 2 * 64 * 2);
    const p = planKvCache({ model, dtype: 'e4m3fn', memoryBytes: 2 ** 20 });
    expect(p.bytesPerBlock).toBe(16 * 1536);
    expect(p.numBlocks).toBe(Math.floor((2 ** 20 - 6 * 12) / (16 * 1536)));
    expect(maxConcurrency(p, cfg.max_position_embeddings!).blocksPerSequence).toBe(32);
  });

  it('sizes a budget like vLLM get_num_blocks', () => {
    const p = planKvCache({ model: llama8b, dtype: 'bf16', memoryBytes: 10 * GiB + 5, scales: 'none' });
    expect(p.numBlocks).toBe(5 * 1024);
    expect(p.numTokens).toBe(5 * 1024 * 16);
    expect(p.numUsableBlocks).toBe(5 * 1024 - 1);
    expect(p.usedBytes).toBe(10 * GiB);
    const c = maxConcurrency(p, 8192);
    expect(c.blocksPerSequence).toBe(512);
    expect(c.ratio).toBe(10);
    expect(c.sequences).toBe(9); // the null block is not usable
    expect(maxConcurrency(p, 8193).blocksPerSequence).toBe(513);
  });

  it('accounts scale sidecars', () => {
    expect(kvScaleBytes(llama8b, { dtype: 'e4m3fn' })).toBe(32 * 12);
    expect(kvScaleBytes(llama8b, { dtype: 'e4m3fn', scales: 'head' })).toBe(32 * (8 + 8 + 32) * 4);
    expect(kvScaleBytes(llama8b, { dtype: 'bf16' })).toBe(0);
    // per-token-head scales live in the page: 2 × blockSize × numKvHeads × 4 per layer
    expect(kvPageBytes(llama8b, { dtype: 'e4m3fn', scales: 'token_head' })).toBe(2 * 16 * 8 * 128 + 2 * 16 * 8 * 4);
    expect(kvScaleBytes(llama8b, { dtype: 'e4m3fn', scales: 'token_head' })).toBe(0);
    const p = planKvCache({ model: llama8b, dtype: 'e4m3fn', memoryBytes: 2 ** 20 * 3 + 32 * 12 - 1 });
    expect(p.numBlocks).toBe(2); // the scale bytes do not fit with a third block
    expect(planKvCache({ model: llama8b, dtype: 'e4m3fn', memoryBytes: 100 }).numBlocks).toBe(0);
    expect(planKvCache({ model: llama8b, dtype: 'e4m3fn', memoryBytes: 100 }).usedBytes).toBe(0);
  });

  it('gives FP8 exactly twice the bf16 tokens, up to one block and the scale bytes (any model, any budget)', () => {
    fc.assert(
      fc.property(
        fc.record({
          numLayers: fc.integer({ min: 1, max: 128 }),
          numKvHeads: fc.integer({ min: 1, max: 64 }),
          headSize: fc.integer({ min: 1, max: 576 }),
        }),
        fc.constantFrom(1, 2, 4, 8, 16, 32, 64, 128),
        fc.double({ min: 0, max: 2 ** 40, noNaN: true }),
        fc.constantFrom('e4m3fn' as const, 'e5m2' as const, 'e4m3fnuz' as const, 'e5m2fnuz' as const),
        (model, blockSize, memoryBytes, fp8) => {
          const bf16 = planKvCache({ model, dtype: 'bf16', blockSize, memoryBytes });
          const bare = planKvCache({ model, dtype: fp8, blockSize, memoryBytes, scales: 'none' });
          expect(bare.bytesPerToken * 2).toBe(bf16.bytesPerToken);
          // floor(2M/B) ∈ {2·floor(M/B), 2·floor(M/B) + 1}
          expect(bare.numTokens - 2 * bf16.numTokens).toBeGreaterThanOrEqual(0);
          expect(bare.numTokens - 2 * bf16.numTokens).toBeLessThanOrEqual(blockSize);
          const withScales = planKvCache({ model, dtype: fp8, blockSize, memoryBytes });
          const scaleBlocks = Math.ceil(withScales.scaleBytes / withScales.bytesPerBlock);
          expect(bare.numBlocks - withScales.numBlocks).toBeLessThanOrEqual(scaleBlocks);
          expect(withScales.numBlocks).toBeLessThanOrEqual(bare.numBlocks);
        },
      ),
      { numRuns: 500, seed: 11 },
    );
  });

  it('works for every dtype', () => {
    for (const dtype of KV_STORAGE_DTYPES) {
      const p = planKvCache({ model: llama8b, dtype, memoryBytes: GiB });
      expect(p.numBlocks * p.bytesPerBlock + p.scaleBytes).toBeLessThanOrEqual(GiB);
      expect((p.numBlocks + 1) * p.bytesPerBlock + p.scaleBytes).toBeGreaterThan(GiB);
    }
  });

  it('rejects bad input', () => {
    expect(errorCode(() => kvBytesPerToken({ ...llama8b, numLayers: 0 }, { dtype: 'bf16' }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBytesPerToken({ ...llama8b, numKvHeads: -8 }, { dtype: 'bf16' }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBytesPerToken({ ...llama8b, headSize: 1.5 }, { dtype: 'bf16' }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBytesPerToken(llama8b, { dtype: 'bf16', blockSize: 48 }))).toBe('NOT_POWER_OF_TWO');
    expect(errorCode(() => kvBytesPerToken(llama8b, { dtype: 'int4' as never }))).toBe('UNSUPPORTED_DTYPE');
    expect(errorCode(() => kvBytesPerToken(llama8b, { dtype: 'bf16', scales: 'block' as never }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBytesPerToken(null as never, { dtype: 'bf16' }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => planKvCache({ model: llama8b, dtype: 'bf16', memoryBytes: -1 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => planKvCache({ model: llama8b, dtype: 'bf16', memoryBytes: Number.NaN }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => planKvCache(undefined as never))).toBe('INVALID_ARGUMENT');
    const p = planKvCache({ model: llama8b, dtype: 'bf16', memoryBytes: GiB });
    expect(errorCode(() => maxConcurrency(p, 0))).toBe('INVALID_ARGUMENT');
  });
});
