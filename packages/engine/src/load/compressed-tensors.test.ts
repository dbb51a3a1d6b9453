import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { createReferenceBackend, type KernelBackend } from '@kvq/kernels';
import { describe, expect, it } from 'vitest';

import type { ModelConfig } from '../config/model-config.js';
import { LLM } from '../llm/llm.js';
import { writeSafetensors, type SafetensorsWritable } from '../formats/safetensors.js';
import { engineErrorOfAsync, randomHfTensors, tempDir, tinyConfig, tinyConfigJson } from '../testing/fixtures.js';
import { parseCompressedTensorsConfig, schemeForModule } from './compressed-tensors.js';
import { loadModel } from './load-model.js';

/** 64 input columns: one int32 word holds 8 int4 values, so 8 words per row; groups of 16 give 4 groups per row. */
const config: ModelConfig = tinyConfig({ hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 64, vocabSize: 32 });
const GROUP = 16;

/** Deterministic int4 value in [-8, 7] for element (r, c) of a tensor. */
const q4 = (seed: number, r: number, c: number): number => (((seed * 131 + r * 17 + c * 7) % 16) + 16) % 16 - 8;

/**
 * compressed-tensors' `pack_to_int32` written out by hand for 4 bits: element `c` of a row goes to word `c / 8` at bit
 * `4 * (c % 8)`, stored `q + 8`; `packedDim 0` packs along rows (zero points).
 */
function packInt4(values: (r: number, c: number) => number, rows: number, cols: number, packedDim: 0 | 1): { data: Int32Array; shape: number[] } {
  if (packedDim === 1) {
    const words = Math.ceil(cols / 8);
    const data = new Int32Array(rows * words);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[r * words + (c >> 3)]! |= (values(r, c) + 8) << (4 * (c & 7));
    return { data, shape: [rows, words] };
  }
  const words = Math.ceil(rows / 8);
  const data = new Int32Array(words * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[(r >> 3) * cols + c]! |= (values(r, c) + 8) << (4 * (r & 7));
  return { data, shape: [words, cols] };
}

const W4_CONFIG = (symmetric: boolean, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  quant_method: 'compressed-tensors',
  format: 'pack-quantized',
  quantization_status: 'compressed',
  ignore: ['lm_head'],
  kv_cache_scheme: null,
  config_groups: {
    group_0: { targets: ['Linear'], input_activations: null, weights: { num_bits: 4, type: 'int', symmetric, strategy: 'group', group_size: GROUP, actorder: null, dynamic: false } },
  },
  ...extra,
});

/** Write a folder: config.json with `quantizationConfig`, tensors, a 32-token BPE tokenizer. */
async function folder(dir: string, tensors: Map<string, SafetensorsWritable>, quantizationConfig: unknown): Promise<void> {
  await writeFile(join(dir, 'config.json'), JSON.stringify({ ...tinyConfigJson(config), quantization_config: quantizationConfig }));
  await writeSafetensors(join(dir, 'model.safetensors'), tensors);
  const vocab = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [i === 31 ? 'AB' : String.fromCharCode(0x41 + i), i]));
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab, merges: ['A B'] } }));
}

/** Dense tensors with every decoder Linear replaced by hand-packed W4A16 tensors (optionally asymmetric). */
function w4Tensors(symmetric: boolean): Map<string, SafetensorsWritable> {
  const out = new Map<string, SafetensorsWritable>();
  let seed = 0;
  for (const [name, t] of randomHfTensors(config, 2)) {
    if (!/_proj\.weight$/.test(name)) {
      out.set(name, t);
      continue;
    }
    seed++;
    const m = name.slice(0, -'.weight'.length);
    const [rows, cols] = t.shape as [number, number];
    const s = seed;
    const packed = packInt4((r, c) => q4(s, r, c), rows, cols, 1);
    out.set(`${m}.weight_packed`, { safetensorsDtype: 'I32', shape: packed.shape, data: packed.data });
    out.set(`${m}.weight_shape`, { safetensorsDtype: 'I64', shape: [2], data: new BigInt64Array([BigInt(rows), BigInt(cols)]) });
    const scale = Float32Array.from({ length: rows * (cols / GROUP) }, (_, i) => 0.01 * (1 + (i % 5)));
    out.set(`${m}.weight_scale`, { safetensorsDtype: 'F32', shape: [rows, cols / GROUP], data: scale });
    if (!symmetric) {
      const zp = packInt4((r, g) => ((r + 3 * g + s) % 16) - 8, rows, cols / GROUP, 0);
      out.set(`${m}.weight_zero_point`, { safetensorsDtype: 'I32', shape: zp.shape, data: zp.data });
    }
  }
  return out;
}

describe('compressed-tensors quantization_config', () => {
  it('matches targets and ignore lists as compressed-tensors does (exact > re: > class name; re: anchored at the start)', () => {
    const c = parseCompressedTensorsConfig(
      {
        quant_method: 'compressed-tensors',
        format: 'mixed-precision',
        ignore: ['lm_head', 're:.*layers\\.1\\.mlp\\.down_proj'],
        config_groups: {
          a: { targets: ['Linear'], format: 'float-quantized', weights: { num_bits: 8, type: 'float', strategy: 'channel' } },
          b: { targets: ['re:.*self_attn\\.(q|k)_proj$'], format: 'pack-quantized', weights: { num_bits: 4, type: 'int', strategy: 'group', group_size: 32 } },
          c: { targets: ['model.layers.0.self_attn.q_proj'], format: 'int-quantized', weights: { num_bits: 8, type: 'int', strategy: 'channel' } },
        },
      },
      'config.json',
    )!;
    expect(schemeForModule(c, 'model.layers.0.self_attn.q_proj')!.name).toBe('c');
    expect(schemeForModule(c, 'model.layers.1.self_attn.k_proj')!.name).toBe('b');
    expect(schemeForModule(c, 'model.layers.1.self_attn.v_proj')!.name).toBe('a');
    expect(schemeForModule(c, 'model.layers.1.mlp.down_proj')).toBeUndefined();
    expect(schemeForModule(c, 'lm_head')).toBeUndefined();
    expect(schemeForModule(c, 'model.layers.0.mlp.down_proj')!.format).toBe('float-quantized');
    // Not compressed-tensors, or no weight schemes (a KV-cache-only checkpoint): nothing to do.
    expect(parseCompressedTensorsConfig({ quant_method: 'fp8' }, 'x')).toBeUndefined();
    expect(parseCompressedTensorsConfig({ quant_method: 'compressed-tensors', config_groups: {}, kv_cache_scheme: { num_bits: 8 } }, 'x')).toBeUndefined();
  });

  it('rejects unknown formats, bit widths, strategies and act-order with typed errors naming the field', () => {
    const base = W4_CONFIG(true) as { config_groups: { group_0: { weights: Record<string, unknown> } } };
    const bad = (patch: (q: Record<string, unknown>) => void): { code: string; field: string | undefined } => {
      const q = structuredClone(base) as unknown as Record<string, unknown>;
      patch(q);
      try {
        parseCompressedTensorsConfig(q, 'config.json');
      } catch (e) {
        return { code: (e as { code: string }).code, field: (e as { field?: string }).field };
      }
      return { code: 'none', field: undefined };
    };
    const w = (q: Record<string, unknown>): Record<string, unknown> => (q.config_groups as { group_0: { weights: Record<string, unknown> } }).group_0.weights;
    expect(bad((q) => (q.format = 'marlin-24'))).toEqual({ code: 'UNSUPPORTED_FORMAT', field: 'quantization_config.format' });
    expect(bad((q) => (w(q).num_bits = 2))).toEqual({ code: 'UNSUPPORTED_FORMAT', field: 'quantization_config.config_groups.group_0.weights.num_bits' });
    expect(bad((q) => (w(q).strategy = 'block'))).toEqual({ code: 'UNSUPPORTED_FORMAT', field: 'quantization_config.config_groups.group_0.weights.strategy' });
    expect(bad((q) => (w(q).group_size = 0))).toEqual({ code: 'INVALID_CONFIG', field: 'quantization_config.config_groups.group_0.weights.group_size' });
    expect(bad((q) => (w(q).actorder = 'group'))).toEqual({ code: 'UNSUPPORTED_FORMAT', field: 'quantization_config.config_groups.group_0.weights.actorder' });
    expect(bad((q) => (q.ignore = 'lm_head'))).toEqual({ code: 'INVALID_CONFIG', field: 'quantization_config.ignore' });
  });
});

const INT8_CONFIG = (inputActivations: unknown): Record<string, unknown> => ({
  quant_method: 'compressed-tensors',
  format: 'int-quantized',
  ignore: ['lm_head'],
  config_groups: { group_0: { targets: ['Linear'], input_activations: inputActivations, weights: { num_bits: 8, type: 'int', symmetric: true, strategy: 'channel', dynamic: false } } },
});

/** Dense tensors with every decoder Linear as int8 codes, per-channel scales and (optionally) a static input_scale. */
function int8Tensors(inputScale = true, inputScaleValue = 0.125): Map<string, SafetensorsWritable> {
  const out = new Map<string, SafetensorsWritable>();
  for (const [name, t] of randomHfTensors(config, 5)) {
    if (!/_proj\.weight$/.test(name)) {
      out.set(name, t);
      continue;
    }
    const m = name.slice(0, -'.weight'.length);
    const [rows, cols] = t.shape as [number, number];
    out.set(`${m}.weight`, { safetensorsDtype: 'I8', shape: [rows, cols], data: Int8Array.from({ length: rows * cols }, (_, i) => ((i * 37) % 255) - 127) });
    out.set(`${m}.weight_scale`, { safetensorsDtype: 'F32', shape: [rows, 1], data: Float32Array.from({ length: rows }, (_, i) => 0.002 * (1 + (i % 3))) });
    if (inputScale) out.set(`${m}.input_scale`, { safetensorsDtype: 'F32', shape: [1], data: new Float32Array([inputScaleValue]) });
  }
  return out;
}

describe('compressed-tensors checkpoints', () => {
  it.each([true, false])('pack-quantized int4 (symmetric %s): the int32 words are the contract nibbles byte for byte; zero points unpacked along rows', async (symmetric) => {
    const { dir, cleanup } = await tempDir();
    try {
      const tensors = w4Tensors(symmetric);
      await folder(dir, tensors, W4_CONFIG(symmetric));
      const m = await loadModel(dir);
      const down = m.weights.layers[1]!.down;
      expect(down.dtype).toBe('int4');
      expect(down.groupSize).toBe(GROUP);
      const [rows, cols] = down.shape as [number, number];
      // Contract: element 2j in the low nibble of byte j, 2j+1 in the high nibble, each q + 8.
      const seed = [...tensors.keys()].filter((n) => n.endsWith('.weight_packed')).indexOf('model.layers.1.mlp.down_proj.weight_packed') + 1;
      const bytes = down.data as Uint8Array;
      expect(bytes.byteLength).toBe((rows * cols) / 2);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const nib = (bytes[(r * cols + c) >> 1]! >> (4 * (c & 1))) & 0xf;
          expect(nib - 8).toBe(q4(seed, r, c));
        }
      }
      expect([...down.scale!]).toEqual([...(tensors.get('model.layers.1.mlp.down_proj.weight_scale')!.data as Float32Array)]);
      if (symmetric) {
        expect(down.zeroPoint).toBeUndefined();
      } else {
        for (let r = 0; r < rows; r++) for (let g = 0; g < cols / GROUP; g++) expect(down.zeroPoint![r * (cols / GROUP) + g]).toBe(((r + 3 * g + seed) % 16) - 8);
      }
      expect(m.weights.embedTokens.dtype).toBe('f32');
      expect(m.weights.lmHead.dtype).toBe('f32'); // ignored: lm_head
      expect(m.warnings.filter((w) => w.includes('not used'))).toEqual([]);
    } finally {
      await cleanup();
    }
  });

  it('an FP8-weight + FP8-KV checkpoint loads with both: fp8 codes and per-channel scales, static input scales kept, KV scales resolved', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const tensors = new Map<string, SafetensorsWritable>();
      for (const [name, t] of randomHfTensors(config, 4)) {
        if (!/_proj\.weight$/.test(name)) {
          tensors.set(name, t);
          continue;
        }
        const m = name.slice(0, -'.weight'.length);
        const [rows, cols] = t.shape as [number, number];
        tensors.set(`${m}.weight`, { safetensorsDtype: 'F8_E4M3', shape: [rows, cols], data: Uint8Array.from({ length: rows * cols }, (_, i) => (i * 37) % 0x7f) });
        // BF16 scales as llm-compressor writes them: 0.5 = 0x3f00, 0.25 = 0x3e80.
        tensors.set(`${m}.weight_scale`, { safetensorsDtype: 'BF16', shape: [rows, 1], data: Uint16Array.from({ length: rows }, (_, i) => (i % 2 ? 0x3f00 : 0x3e80)) });
        tensors.set(`${m}.input_scale`, { safetensorsDtype: 'F32', shape: [1], data: new Float32Array([0.125]) });
      }
      for (let l = 0; l < config.numLayers; l++) {
        tensors.set(`model.layers.${l}.self_attn.k_scale`, { safetensorsDtype: 'F32', shape: [], data: new Float32Array([0.5 + l]) });
        tensors.set(`model.layers.${l}.self_attn.v_scale`, { safetensorsDtype: 'F32', shape: [], data: new Float32Array([0.25 + l]) });
      }
      const weights = { num_bits: 8, type: 'float', symmetric: true, strategy: 'channel', dynamic: false };
      await folder(dir, tensors, {
        quant_method: 'compressed-tensors',
        format: 'float-quantized',
        ignore: ['lm_head'],
        config_groups: { group_0: { targets: ['Linear'], weights, input_activations: { num_bits: 8, type: 'float', symmetric: true, strategy: 'tensor', dynamic: false } } },
        kv_cache_scheme: { num_bits: 8, type: 'float', symmetric: true, strategy: 'tensor', dynamic: false },
      });
      const m = await loadModel(dir);
      const q = m.weights.layers[1]!.q;
      expect(q.dtype).toBe('fp8_e4m3');
      expect([...q.scale!.slice(0, 4)]).toEqual([0.25, 0.5, 0.25, 0.5]);
      expect([...q.inputScale!]).toEqual([0.125]);
      expect((q.data as Uint8Array)[5]).toBe((5 * 37) % 0x7f);
      expect(m.checkpointKvScales!.method).toBe('compressed-tensors');
      expect([...m.kvScales!.layers[1]!.k]).toEqual([1.5]);
      expect([...m.kvScales!.layers[1]!.v]).toEqual([1.25]);
      expect(m.warnings.filter((w) => w.includes('not used'))).toEqual([]);
    } finally {
      await cleanup();
    }
  });

  it('int8 W8A8: dynamic int8 activations per token, or the static input_scale; float activations without input_activations', async () => {
    const variants: [label: string, acts: unknown, want: unknown][] = [
      ['dynamic', { num_bits: 8, type: 'int', symmetric: true, strategy: 'token', dynamic: true }, {}],
      ['static', { num_bits: 8, type: 'int', symmetric: true, strategy: 'tensor', dynamic: false }, { staticScale: 0.125 }],
      ['W8A16', null, undefined],
    ];
    for (const [label, acts, want] of variants) {
      const { dir, cleanup } = await tempDir();
      try {
        await folder(dir, int8Tensors(), INT8_CONFIG(acts));
        const m = await loadModel(dir);
        const q = m.weights.layers[1]!.q;
        expect(q.dtype, label).toBe('int8');
        expect(q.int8Activations, label).toEqual(want);
        expect(m.weights.lmHead.int8Activations, label).toBeUndefined(); // ignored: lm_head stays float
        // The forward pass hands the mode to every int8 linear (and none to the float lm_head).
        const calls: string[] = [];
        const ref = createReferenceBackend();
        const backend: KernelBackend = {
          ...ref,
          linear: (a) => {
            calls.push(`${a.weight.dtype} ${a.activations ?? 'f32'} ${a.activationScale ?? '-'}`);
            ref.linear(a);
          },
        };
        const llm = await LLM.create({ model: m, backend, kvCacheMemory: 1 << 20 });
        await llm.generate({ promptTokenIds: [1, 2, 3] }, { maxTokens: 2, temperature: 0 });
        const mode = want === undefined ? 'f32 -' : `q8 ${(want as { staticScale?: number }).staticScale ?? '-'}`;
        expect(new Set(calls), label).toEqual(new Set([`int8 ${mode}`, 'f32 f32 -']));
      } finally {
        await cleanup();
      }
    }
  });

  it('int8 W8A8: asymmetric or non-int activations, a missing or bad static input_scale are typed errors naming the field', async () => {
    const acts = { num_bits: 8, type: 'int', symmetric: true, strategy: 'tensor', dynamic: false };
    const cases: [label: string, tensors: Map<string, SafetensorsWritable>, qc: unknown, code: string, field: RegExp][] = [
      ['asymmetric', int8Tensors(), INT8_CONFIG({ ...acts, symmetric: false, dynamic: true }), 'UNSUPPORTED_FORMAT', /input_activations\.symmetric$/],
      ['fp8 activations', int8Tensors(), INT8_CONFIG({ ...acts, type: 'float' }), 'UNSUPPORTED_FORMAT', /input_activations\.type$/],
      ['4-bit activations', int8Tensors(), INT8_CONFIG({ ...acts, num_bits: 4 }), 'UNSUPPORTED_FORMAT', /input_activations\.num_bits$/],
      ['no input_scale', int8Tensors(false), INT8_CONFIG(acts), 'MISSING_TENSOR', /\.input_scale$/],
      ['zero input_scale', int8Tensors(true, 0), INT8_CONFIG(acts), 'MALFORMED', /\.input_scale$/],
    ];
    for (const [label, tensors, qc, code, field] of cases) {
      const { dir, cleanup } = await tempDir();
      try {
        await folder(dir, tensors, qc);
        const e = await engineErrorOfAsync(loadModel(dir));
        expect(e.code, label).toBe(code);
        expect(e.field, label).toMatch(field);
      } finally {
        await cleanup();
      }
    }
  });

  it('naive-quantized int4 (I8 values, unpacked I8 zero points) is packed into the contract nibbles at load', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const tensors = new Map<string, SafetensorsWritable>();
      for (const [name, t] of randomHfTensors(config, 6)) {
        if (!/_proj\.weight$/.test(name)) {
          tensors.set(name, t);
          continue;
        }
        const m = name.slice(0, -'.weight'.length);
        const [rows, cols] = t.shape as [number, number];
        tensors.set(`${m}.weight`, { safetensorsDtype: 'I8', shape: [rows, cols], data: Int8Array.from({ length: rows * cols }, (_, i) => q4(9, Math.floor(i / cols), i % cols)) });
        tensors.set(`${m}.weight_scale`, { safetensorsDtype: 'F16', shape: [rows, 1], data: new Uint16Array(rows).fill(0x3800) }); // 0.5
        tensors.set(`${m}.weight_zero_point`, { safetensorsDtype: 'I8', shape: [rows, 1], data: Int8Array.from({ length: rows }, (_, r) => (r % 16) - 8) });
      }
      await folder(dir, tensors, {
        quant_method: 'compressed-tensors',
        format: 'naive-quantized',
        ignore: ['lm_head'],
        config_groups: { g: { targets: ['Linear'], weights: { num_bits: 4, type: 'int', symmetric: false, strategy: 'channel' } } },
      });
      const m = await loadModel(dir);
      const up = m.weights.layers[0]!.up;
      const [rows, cols] = up.shape as [number, number];
      expect(up.dtype).toBe('int4');
      expect(up.groupSize).toBe(cols);
      expect([...up.scale!]).toEqual(new Array<number>(rows).fill(0.5));
      expect([...up.zeroPoint!]).toEqual(Array.from({ length: rows }, (_, r) => (r % 16) - 8));
      const bytes = up.data as Uint8Array;
      for (let i = 0; i < rows * cols; i++) expect(((bytes[i >> 1]! >> (4 * (i & 1))) & 0xf) - 8).toBe(q4(9, Math.floor(i / cols), i % cols));
    } finally {
      await cleanup();
    }
  });

  it('rejects bad checkpoints with typed errors naming file, tensor and field', async () => {
    const { dir, cleanup } = await tempDir();
    const down = 'model.layers.0.mlp.down_proj';
    const attempt = async (mutate: (t: Map<string, SafetensorsWritable>) => void, qc: unknown = W4_CONFIG(true)) => {
      const symmetric = (qc as { config_groups: { group_0: { weights: { symmetric: boolean } } } }).config_groups.group_0.weights.symmetric;
      const t = w4Tensors(symmetric);
      mutate(t);
      await folder(dir, t, qc);
      return engineErrorOfAsync(loadModel(dir));
    };
    try {
      // Wrong scale shape.
      let e = await attempt((t) => t.set(`${down}.weight_scale`, { safetensorsDtype: 'F32', shape: [64, 3], data: new Float32Array(192) }));
      expect([e.code, e.field]).toEqual(['SHAPE_MISMATCH', `${down}.weight_scale`]);
      expect(e.message).toContain('model.safetensors');
      // Asymmetric without zero points.
      e = await attempt((t) => t.delete(`${down}.weight_zero_point`), W4_CONFIG(false));
      expect([e.code, e.field]).toEqual(['MISSING_TENSOR', `${down}.weight_zero_point`]);
      // Group size not dividing the input columns.
      const qc = W4_CONFIG(true) as { config_groups: { group_0: { weights: Record<string, unknown> } } };
      qc.config_groups.group_0.weights.group_size = 24;
      e = await attempt(() => undefined, qc);
      expect(e.code).toBe('SHAPE_MISMATCH');
      expect(e.message).toContain('group_size 24 does not divide the 64 input columns');
      // Unknown format.
      e = await attempt(() => undefined, { ...W4_CONFIG(true), format: 'sparse-24-bitmask' });
      expect([e.code, e.field]).toEqual(['UNSUPPORTED_FORMAT', 'quantization_config.format']);
      // Act-order permutation present.
      e = await attempt((t) => t.set(`${down}.weight_g_idx`, { safetensorsDtype: 'I32', shape: [64], data: new Int32Array(64) }));
      expect([e.code, e.field]).toEqual(['UNSUPPORTED_FORMAT', `${down}.weight_g_idx`]);
      // weight_shape disagreeing with config.json.
      e = await attempt((t) => t.set(`${down}.weight_shape`, { safetensorsDtype: 'I64', shape: [2], data: new BigInt64Array([64n, 32n]) }));
      expect([e.code, e.field]).toEqual(['MALFORMED', `${down}.weight_shape`]);
      // Packed data of the wrong width.
      e = await attempt((t) => t.set(`${down}.weight_packed`, { safetensorsDtype: 'I32', shape: [64, 7], data: new Int32Array(64 * 7) }));
      expect([e.code, e.field]).toEqual(['SHAPE_MISMATCH', `${down}.weight_packed`]);
      // Scale of a non-float dtype.
      e = await attempt((t) => t.set(`${down}.weight_scale`, { safetensorsDtype: 'I32', shape: [64, 4], data: new Int32Array(256) }));
      expect([e.code, e.field]).toEqual(['UNSUPPORTED_DTYPE', `${down}.weight_scale`]);
    } finally {
      await cleanup();
    }
  });

  it('truncated tensor data is TRUNCATED naming the tensor', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await folder(dir, w4Tensors(true), W4_CONFIG(true));
      const { readFile } = await import('node:fs/promises');
      const path = join(dir, 'model.safetensors');
      const bytes = await readFile(path);
      await writeFile(path, bytes.subarray(0, bytes.length - 100));
      const e = await engineErrorOfAsync(loadModel(dir));
      expect(e.code).toBe('TRUNCATED');
      expect(e.field).toBeDefined();
      expect(e.message).toContain(e.field!);
    } finally {
      await cleanup();
    }
  });
});
