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

describe('parseHfConfig: Qwen3, Gemma 2/3, Phi-3 and sliding windows', () => {
  const base = { ...tinyConfigJson(), num_hidden_layers: 4 };
  it('reads each family with its defaults', () => {
    expect(parseHfConfig({ ...base, architectures: ['Qwen3ForCausalLM'], head_dim: undefined })).toMatchObject({ modelType: 'qwen3', headDim: 128, qkNorm: true, attentionBias: false });
    const g2 = parseHfConfig({ ...base, architectures: ['Gemma2ForCausalLM'], head_dim: 8, hidden_act: undefined, torch_dtype: 'bfloat16', tie_word_embeddings: undefined });
    expect(g2).toMatchObject({ hiddenAct: 'gelu_pytorch_tanh', tieWordEmbeddings: true, attnLogitSoftcapping: 50, finalLogitSoftcapping: 30, slidingWindow: 4096, embeddingScale: 4, attentionScale: 1 / 16 });
    expect(g2.layerTypes).toEqual(['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention']);
    const g3 = parseHfConfig({ ...base, architectures: ['Gemma3ForCausalLM'], head_dim: 8, num_hidden_layers: 7, rope_parameters: { full_attention: { rope_type: 'linear', factor: 8, rope_theta: 1e6 }, sliding_attention: { rope_type: 'default', rope_theta: 1e4 } } });
    expect(g3).toMatchObject({ ropeTheta: 1e6, ropeScaling: { type: 'linear', factor: 8 }, localRope: { theta: 1e4, scaling: null }, attnLogitSoftcapping: undefined });
    expect(g3.layerTypes!.map((t) => t[0])).toEqual(['s', 's', 's', 's', 's', 'f', 's']);
    expect(parseHfConfig({ ...base, architectures: ['Phi3ForCausalLM'], sliding_window: 2047 })).toMatchObject({ fusedProjections: true, slidingWindow: 2047 });
    const q2 = parseHfConfig({ ...base, architectures: ['Qwen2ForCausalLM'], use_sliding_window: true, sliding_window: 32, max_window_layers: 2 });
    expect(q2.layerTypes).toEqual(['full_attention', 'full_attention', 'sliding_attention', 'sliding_attention']);
    expect(parseHfConfig({ ...base, architectures: ['Qwen2ForCausalLM'], use_sliding_window: false, sliding_window: 32 }).slidingWindow).toBeNull();
  });

  it('reads yarn and dynamic scaling with the model-level fallbacks', () => {
    const y = parseHfConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32 } });
    expect(y.ropeScaling).toMatchObject({ type: 'yarn', factor: 4, originalMaxPositions: 32 });
    expect(parseHfConfig({ ...base, rope_scaling: { type: 'dynamic', factor: 2 } }).ropeScaling).toEqual({ type: 'dynamic', factor: 2, maxPositions: 64 });
  });

  it.each([
    [{ architectures: ['Gemma2ForCausalLM'], hidden_activation: 'gelu' }, 'UNSUPPORTED_ARCHITECTURE', 'hidden_activation'],
    [{ architectures: ['Gemma2ForCausalLM'], layer_types: ['full_attention'] }, 'INVALID_CONFIG', 'layer_types'],
    [{ architectures: ['Gemma3ForCausalLM'], sliding_window_pattern: 0 }, 'INVALID_CONFIG', 'sliding_window_pattern'],
    [{ architectures: ['Gemma3ForCausalLM'], use_bidirectional_attention: true }, 'UNSUPPORTED_ARCHITECTURE', 'use_bidirectional_attention'],
    [{ architectures: ['Gemma2ForCausalLM'], query_pre_attn_scalar: -1 }, 'INVALID_CONFIG', 'query_pre_attn_scalar'],
    [{ architectures: ['Gemma3ForConditionalGeneration'] }, 'INVALID_CONFIG', 'text_config'],
    [{ architectures: ['Phi3ForCausalLM'], partial_rotary_factor: 0.75 }, 'UNSUPPORTED_ARCHITECTURE', 'partial_rotary_factor'],
    [{ architectures: ['Phi3ForCausalLM'], rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [1, 1] }, original_max_position_embeddings: 8 }, 'INVALID_CONFIG', 'rope_scaling.short_factor'],
    [{ architectures: ['Qwen2ForCausalLM'], use_sliding_window: true, sliding_window: 8, max_window_layers: -1 }, 'INVALID_CONFIG', 'max_window_layers'],
  ])('rejects %j with %s on %s', (patch, code, field) => {
    const e = engineErrorOf(() => parseHfConfig({ ...base, ...patch }, 'model/config.json'));
    expect(e.code).toBe(code);
    expect(e.field).toBe(field);
  });

  it('loads the text part of a Gemma 3 multimodal config with the language_model. tensor prefix', () => {
    const c = parseHfConfig({ architectures: ['Gemma3ForConditionalGeneration'], torch_dtype: 'bfloat16', eos_token_id: [1, 106], text_config: { ...base, head_dim: 8, architectures: undefined, eos_token_id: undefined, torch_dtype: undefined } });
    expect(c).toMatchObject({ architecture: 'Gemma3ForCausalLM', modelType: 'gemma3_text', tensorPrefix: 'language_model.', eosTokenIds: [1, 106], torchDtype: 'bfloat16' });
  });
});

describe('parseHfConfig: a Gemma 3 multimodal config that lists only non-default text fields', () => {
  it('fills Gemma3TextConfig defaults (the shape of google/gemma-3-4b-it config.json)', () => {
    const c = parseHfConfig({
      architectures: ['Gemma3ForConditionalGeneration'],
      boi_token_index: 255999,
      eos_token_id: [1, 106],
      model_type: 'gemma3',
      text_config: { hidden_size: 2560, intermediate_size: 10240, model_type: 'gemma3_text', num_hidden_layers: 34, rope_scaling: { factor: 8.0, rope_type: 'linear' }, sliding_window: 1024 },
      torch_dtype: 'bfloat16',
      vision_config: { model_type: 'siglip_vision_model' },
    });
    expect(c).toMatchObject({
      architecture: 'Gemma3ForCausalLM',
      hiddenSize: 2560,
      numLayers: 34,
      numHeads: 8,
      numKvHeads: 4,
      headDim: 256,
      vocabSize: 262208,
      ropeTheta: 1e6,
      ropeScaling: { type: 'linear', factor: 8 },
      localRope: { theta: 10000, scaling: null },
      slidingWindow: 1024,
      attentionScale: 1 / 16,
      embeddingScale: 50.5, // sqrt(2560) = 50.596 in bfloat16
      eosTokenIds: [1, 106],
      bosTokenId: 2,
      tieWordEmbeddings: true,
    });
    expect(c.layerTypes!.filter((t) => t === 'full_attention')).toHaveLength(5);
  });
});
