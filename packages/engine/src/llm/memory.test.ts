import { modelTinyPath } from '@kvq/model-tiny';
import { describe, expect, it } from 'vitest';
import { LLM } from './llm.js';

describe('FP8 KV cache capacity', () => {
  it('fits 2x the tokens of bf16 in the same kvCacheMemory, and runs a context bf16 cannot hold', async () => {
    // kvq-tiny: 6 layers x 2 kv heads x 64 dims x (K+V): 3072 B/token in bf16, 1536 in FP8.
    const kvCacheMemory = 16 * 3072 * 20; // 20 blocks of 16 tokens in bf16
    const bf16 = await LLM.create({ model: modelTinyPath, kvCacheDtype: 'auto', kvCacheMemory });
    const fp8 = await LLM.create({ model: modelTinyPath, kvCacheDtype: 'fp8', kvCacheMemory });
    expect(bf16.kvDtype).toBe('bf16');
    expect(fp8.kvDtype).toBe('e4m3fn');
    expect(bf16.kvBytesPerToken).toBe(3072);
    expect(fp8.kvBytesPerToken).toBe(1536);
    expect(bf16.numBlocks).toBe(20);
    // exactly 2x, less at most one block for the per-tensor scale bytes
    expect(fp8.numBlocks === 40 || fp8.numBlocks === 39).toBe(true);
    // 19 usable bf16 blocks hold 304 tokens; a 400-token context needs 25 blocks
    const prompt = Array.from({ length: 380 }, (_, i) => 3 + ((i * 17) % 1000));
    const [out] = await fp8.generate([{ promptTokenIds: prompt }], { temperature: 0, maxTokens: 20, ignoreEos: true });
    expect(out!.outputs[0]!.tokenIds).toHaveLength(20);
    await expect(bf16.generate([{ promptTokenIds: prompt }], { temperature: 0, maxTokens: 20, ignoreEos: true })).rejects.toThrow(/needs more KV cache blocks than exist/);
  });
});
