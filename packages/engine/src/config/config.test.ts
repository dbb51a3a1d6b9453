import { describe, expect, it } from 'vitest';

import { engineErrorOf, tinyConfigJson } from '../testing/fixtures.js';
import { parseGenerationConfig, toGenerationConfigJson } from './generation-config.js';
import { parseHfConfig, ropeInverseFrequencies, toHfConfigJson } from './model-config.js';

const llama32 = {
  architectures: ['LlamaForCausalLM'],
  hidden_size: 2048,
  num_hidden_layers: 16,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 64,
  intermediate_size: 8192,
  vocab_size: 128256,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  max_position_embeddings: 131072,
  tie_word_embeddings: true,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  torch_dtype: 'bfloat16',
};

describe('parseHfConfig', () => {
  it('reads a Llama 3.2 config: GQA, tied embeddings, llama3 RoPE scaling, EOS list', () => {
    const c = parseHfConfig(llama32);
    expect(c).toMatchObject({
      architecture: 'LlamaForCausalLM',
      numKvHeads: 8,
      headDim: 64,
      tieWordEmbeddings: true,
      eosTokenIds: [128001, 128008, 128009],
      ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
      ropeLayout: 'rotate_half',
      torchDtype: 'bfloat16',
    });
    expect(parseHfConfig(toHfConfigJson(c))).toEqual(c);
  });

  it('scales RoPE frequencies per transformers llama3 rules (high frequencies kept, low divided, middle blended)', () => {
    const c = parseHfConfig(llama32);
    const inv = ropeInverseFrequencies(c);
    const plain = ropeInverseFrequencies({ ...c, ropeScaling: null });
    expect(inv).toHaveLength(32);
    expect(inv[0]).toBe(plain[0]); // wavelength 2π < 8192/4: unchanged
    expect(inv[31]).toBeCloseTo(plain[31]! / 32, 15); // wavelength > 8192: divided by factor
    const i = plain.findIndex((f) => {
      const w = (2 * Math.PI) / f;
      return w >= 2048 && w <= 8192;
    });
    const w = (2 * Math.PI) / plain[i]!;
    const smooth = (8192 / w - 1) / 3;
    expect(inv[i]).toBeCloseTo((1 - smooth) * (plain[i]! / 32) + smooth * plain[i]!, 15);
  });

  it('honours head_dim overrides, Qwen2 q/k/v biases and Mistral sliding windows', () => {
    expect(parseHfConfig({ ...tinyConfigJson(), head_dim: 8 }).headDim).toBe(8);
    const qwen = parseHfConfig({ ...tinyConfigJson(), architectures: ['Qwen2ForCausalLM'], use_sliding_window: false });
    expect(qwen).toMatchObject({ modelType: 'qwen2', attentionBias: true, attentionOutputBias: false });
    expect(parseHfConfig({ ...tinyConfigJson(), architectures: ['MistralForCausalLM'], sliding_window: 4096 }).slidingWindow).toBe(4096);
    expect(parseHfConfig({ ...tinyConfigJson(), attention_bias: true })).toMatchObject({ attentionBias: true, attentionOutputBias: true });
    const generationEos = parseHfConfig(tinyConfigJson(), 'config.json', [7, 8]).eosTokenIds;
    expect(generationEos).toEqual([7, 8]);
  });

  it.each([
    [{ architectures: ['GPTNeoXForCausalLM'] }, 'UNSUPPORTED_ARCHITECTURE', 'architectures', 'GPTNeoXForCausalLM'],
    [{ hidden_act: 'gelu' }, 'UNSUPPORTED_ARCHITECTURE', 'hidden_act', 'gelu'],
    [{ rope_scaling: { rope_type: 'mrope', factor: 4 } }, 'UNSUPPORTED_ARCHITECTURE', 'rope_scaling.rope_type', 'mrope'],
    [{ rope_scaling: { rope_type: 'yarn', factor: -4 } }, 'INVALID_CONFIG', 'rope_scaling.factor', '-4'],
    [{ hidden_size: -16 }, 'INVALID_CONFIG', 'hidden_size', '-16'],
    [{ num_key_value_heads: 3 }, 'INVALID_CONFIG', 'num_key_value_heads', '3'],
    [{ vocab_size: undefined }, 'INVALID_CONFIG', 'vocab_size', 'missing'],
    [{ head_dim: 5 }, 'INVALID_CONFIG', 'head_dim', '5'],
    [{ rms_norm_eps: 'small' }, 'INVALID_CONFIG', 'rms_norm_eps', 'small'],
  ])('rejects %j with %s on %s', (patch, code, field, text) => {
    const e = engineErrorOf(() => parseHfConfig({ ...tinyConfigJson(), ...patch }, 'model/config.json'));
    expect(e.code).toBe(code);
    expect(e.field).toBe(field);
    expect(e.message).toContain('model/config.json');
    expect(e.message).toContain(text);
  });
});

describe('parseGenerationConfig', () => {
  it('camel-cases the sampling defaults and round-trips', () => {
    const json = { bos_token_id: 0, eos_token_id: [1, 3], do_sample: true, temperature: 0.7, top_p: 0.8, top_k: 20, repetition_penalty: 1.1, max_new_tokens: 64 };
    const g = parseGenerationConfig(json);
    expect(g).toEqual({ bosTokenId: 0, eosTokenIds: [1, 3], doSample: true, temperature: 0.7, topP: 0.8, topK: 20, repetitionPenalty: 1.1, maxNewTokens: 64 });
    expect(toGenerationConfigJson(g)).toEqual(json);
    expect(parseGenerationConfig({ eos_token_id: 2, transformers_version: '4.40' })).toEqual({ eosTokenIds: [2] });
  });

  it('rejects out-of-range values by field', () => {
    expect(engineErrorOf(() => parseGenerationConfig({ top_p: 1.5 })).field).toBe('top_p');
    expect(engineErrorOf(() => parseGenerationConfig({ eos_token_id: 'x' })).field).toBe('eos_token_id');
    expect(engineErrorOf(() => parseGenerationConfig([])).code).toBe('INVALID_CONFIG');
  });
});
