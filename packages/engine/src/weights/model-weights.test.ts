import { describe, expect, it } from 'vitest';

import { parseHfConfig } from '../config/model-config.js';
import { engineErrorOf, tinyConfigJson } from '../testing/fixtures.js';
import type { Tensor } from '../tensor.js';
import { assembleWeights, expectedHfTensors, lastLayerProbeName } from './model-weights.js';

const phi3 = parseHfConfig({ ...tinyConfigJson(), architectures: ['Phi3ForCausalLM'], hidden_size: 64, head_dim: 16, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 32 });

/** Tensors for every expected name; the fused ones built by `fused`, the rest dense f32 zeros. */
function tensorsWith(fused: (name: string, rows: number, cols: number) => Tensor): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const e of expectedHfTensors(phi3)) {
    const [rows, cols] = e.shape as [number, number];
    if (/qkv_proj|gate_up_proj/.test(e.name)) out.set(e.name, fused(e.name, rows, cols));
    else out.set(e.name, { dtype: 'f32', shape: e.shape, data: new Float32Array(e.shape.reduce((a, b) => a * b, 1)) });
  }
  return out;
}

describe('Phi-3 fused projections', () => {
  it('names qkv_proj / gate_up_proj and probes the fused last layer', () => {
    const names = expectedHfTensors(phi3).map((e) => e.name);
    expect(names).toContain('model.layers.1.self_attn.qkv_proj.weight');
    expect(names).toContain('model.layers.1.mlp.gate_up_proj.weight');
    expect(names.some((n) => n.includes('q_proj') || n.includes('gate_proj'))).toBe(false);
    expect(lastLayerProbeName(phi3)).toBe('model.layers.1.self_attn.qkv_proj.weight');
  });

  it('splits dense, int4 (grouped scales + zero points) and q8_0 fused tensors into row views without copying', () => {
    const dense = tensorsWith((_, rows, cols) => ({ dtype: 'bf16', shape: [rows, cols], data: Uint16Array.from({ length: rows * cols }, (_, i) => i) }));
    const int4 = tensorsWith((_, rows, cols) => ({
      dtype: 'int4',
      shape: [rows, cols],
      data: Uint8Array.from({ length: (rows * cols) / 2 }, (_, i) => i),
      scale: Float32Array.from({ length: rows * (cols / 32) }, (_, i) => i + 1),
      zeroPoint: Int8Array.from({ length: rows * (cols / 32) }, (_, i) => (i % 16) - 8),
      groupSize: 32,
    }));
    const q8 = tensorsWith((_, rows, cols) => ({ dtype: 'q8_0', shape: [rows, cols], data: Uint8Array.from({ length: rows * (cols / 32) * 34 }, (_, i) => i) }));
    for (const [tensors, rowUnits] of [[dense, 64], [int4, 32], [q8, 68]] as const) {
      const w = assembleWeights(phi3, tensors, 'phi3');
      const fused = tensors.get('model.layers.0.self_attn.qkv_proj.weight')!;
      const l = w.layers[0]!;
      expect(l.q.shape).toEqual([64, 64]);
      expect(l.k.shape).toEqual([32, 64]);
      expect(l.v.shape).toEqual([32, 64]);
      expect(l.v.data.buffer).toBe(fused.data.buffer);
      // v starts at row 96: its first stored unit is the fused tensor's unit 96 * (units per row).
      expect(l.v.data[0]).toBe(fused.data[96 * rowUnits]);
      expect(l.v.data.length).toBe(32 * rowUnits);
      if (fused.scale) {
        expect(l.k.scale![0]).toBe(fused.scale[64 * 2]);
        expect(l.k.zeroPoint![0]).toBe(fused.zeroPoint![64 * 2]);
        expect(l.k.scale!.length).toBe(32 * 2);
      }
      const gateUp = tensors.get('model.layers.0.mlp.gate_up_proj.weight')!;
      expect(l.gate.shape).toEqual([32, 64]);
      expect(l.up.data[0]).toBe(gateUp.data[32 * rowUnits]);
    }
  });

  it('a fused tensor of the wrong shape is a SHAPE_MISMATCH naming it', () => {
    const bad = tensorsWith((name, rows, cols) => ({ dtype: 'f32', shape: name.includes('qkv') ? [rows - 1, cols] : [rows, cols], data: new Float32Array(rows * cols) }));
    const e = engineErrorOf(() => assembleWeights(phi3, bad, 'phi3/model.safetensors'));
    expect(e.code).toBe('SHAPE_MISMATCH');
    expect(e.field).toBe('model.layers.0.self_attn.qkv_proj.weight');
  });
});
