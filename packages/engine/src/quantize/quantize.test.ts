import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { quantizeMatrix } from '@kvq/kernels';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readSafetensorsHeader } from '../formats/safetensors.js';
import { parseGguf } from '../formats/gguf.js';
import { openFileSource } from '../io/source.js';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { EXPECTED_Q, tempDir, testData } from '../testing/fixtures.js';
import { tensorToFloat32, type Tensor } from '../tensor.js';
import { weightsByHfName } from '../weights/model-weights.js';
import { quantizeModel } from './quantize.js';
import { ggufTensorType, QUANTIZE_SCHEMES } from './schemes.js';


const sameBytes = (a: ArrayBufferView, b: ArrayBufferView): boolean =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('kvq quantize: kvq-tiny to every scheme and loaded back (stored forms and bytes round-trip)', () => {
  let bf16: LoadedModel;
  let dir: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    bf16 = await loadModel(testData.kvqTiny);
    ({ dir, cleanup } = await tempDir('kvq-quantize-'));
  }, 60_000);
  afterAll(async () => {
    await cleanup?.();
  });

  it.each(QUANTIZE_SCHEMES)('%s', async (scheme) => {
    const out = join(dir, scheme === 'fp8' || scheme === 'w4a16' || scheme === 'w8a8' ? scheme : `${scheme}.gguf`);
    const result = await quantizeModel(bf16, out, scheme);
    const model = await loadModel(out);
    const hf = weightsByHfName(bf16.config, bf16.weights);
    const loaded = weightsByHfName(model.config, model.weights);
    const q0 = model.weights.layers[0]!.q;
    expect(q0.dtype).toBe(EXPECTED_Q[scheme]);

    // Round trip: every loaded Linear holds exactly the stored form quantizeMatrix produced (Q/K rows un-permuted).
    const layerNames = [...loaded.keys()].filter((n) => /_proj\.weight$/.test(n));
    let fileBytes = 0;
    let loadedBytes = 0;
    for (const name of layerNames) {
      const t: Tensor = loaded.get(name)!;
      const [rows, cols] = t.shape as [number, number];
      const values = tensorToFloat32(hf.get(name)!);
      if (result.format === 'gguf') {
        const gname = name.replace(/^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj\.weight$/, (_m, l, _k, p) => `blk.${l}.${({ q: 'attn_q', k: 'attn_k', v: 'attn_v', o: 'attn_output', gate: 'ffn_gate', up: 'ffn_up', down: 'ffn_down' } as Record<string, string>)[p]}.weight`);
        const type = ggufTensorType(scheme as Parameters<typeof ggufTensorType>[0], gname, cols, bf16.config.numLayers, false);
        expect(t.dtype, name).toBe(type);
        if (type !== 'f16') expect(sameBytes(t.data, quantizeMatrix(values, rows, cols, type).data), name).toBe(true);
      } else {
        const dtype = EXPECTED_Q[scheme] as 'fp8_e4m3' | 'int8' | 'int4';
        const want = quantizeMatrix(values, rows, cols, dtype, dtype === 'int4' ? { groupSize: result.groupSize, symmetric: true } : { granularity: 'channel' });
        expect(t.dtype, name).toBe(dtype);
        expect(sameBytes(t.data, want.data), name).toBe(true);
        expect([...t.scale!]).toEqual([...want.scale!]);
        expect(t.groupSize).toBe(dtype === 'int4' ? result.groupSize : undefined);
      }
      loadedBytes += t.data.byteLength;
    }
    // Weight memory = the stored bytes of those tensors in the file.
    if (result.format === 'gguf') {
      const bytes = readFileSync(out);
      const header = parseGguf(bytes, bytes.length, out)!;
      for (const [n, info] of header.tensors) if (/attn_(q|k|v|output)|ffn_(gate|up|down)/.test(n)) fileBytes += info.byteLength!;
    } else {
      const src = await openFileSource(join(out, 'model.safetensors'));
      try {
        const header = await readSafetensorsHeader(src);
        for (const [n, info] of header.tensors) if (/_proj\.(weight|weight_packed)$/.test(n)) fileBytes += info.end - info.begin;
      } finally {
        await src.close();
      }
    }
    expect(loadedBytes).toBe(fileBytes);

  }, 60_000);
});
