import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ggufTensorType, hfNameOfGguf, loadModel, openFileSource, permuteRotaryRows, quantizeMatrix, readGgufHeader, weightsByHfName } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { qualityDocuments } from './benchmark.js';
import { benchmarkMarkdown } from './report/markdown.js';
import { mergeReports } from './report/write.js';
import { llamaTensorSlots, type LlamaShape } from './gguf/llama.js';
import { randomLlamaQuantizedTensors, randomTensorValues, writeRandomLlamaGguf } from './gguf/random-model.js';
import { KvqRunner } from './kvq/runner.js';
import { QualityAccumulator, top2Gap } from './metrics.js';
import { prepareQuantizedTinyModel } from './models.js';
import { defaultPeerDir, isPeerInstalled } from './peer/install.js';
import { PeerRunner } from './peer/runner.js';
import { crossEngineTargets, randomDocuments, type CrossEngineModelResult } from './quantized.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kvq-bench-peer-quant-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// 256 wide so the K-quants fit whole blocks; ffn 320 is not a multiple of 256, so ffn_down takes llama.cpp's fallback.
const SHAPE: LlamaShape = { hiddenSize: 256, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 64, intermediateSize: 320, vocabSize: 400, contextLength: 256 };

describe('random-weight Llama GGUF, quantized with llama.cpp type mixes', () => {
  it("Q4_K_M: llama.cpp's type per tensor, blocks from quantizeMatrix read back byte for byte by kvq's loader, file type 15", async () => {
    const path = join(dir, 'q4km.gguf');
    await writeRandomLlamaGguf(path, SHAPE, { type: 'F32', seed: 5, name: 'q4km', scheme: 'q4_k_m' });
    const { types } = randomLlamaQuantizedTensors(SHAPE, 'q4_k_m', 5);
    expect(types.get('output.weight')).toBe('q6_k');
    expect(types.get('token_embd.weight')).toBe('q4_k');
    expect(types.get('blk.0.attn_q.weight')).toBe('q4_k');
    // use_more_bits(i, 2) holds for layer 1 only (i >= 7 * 2 / 8 in integers).
    expect(types.get('blk.0.attn_v.weight')).toBe('q4_k');
    expect(types.get('blk.1.attn_v.weight')).toBe('q6_k');
    // Rows of 320 are no whole K-quant block: llama.cpp's fallbacks Q4_K -> Q5_0, Q6_K -> Q8_0.
    expect(types.get('blk.0.ffn_down.weight')).toBe('q5_0');
    expect(types.get('blk.1.ffn_down.weight')).toBe('q8_0');
    expect(types.get('blk.0.ffn_gate.weight')).toBe('q4_k');
    expect(types.get('blk.0.attn_norm.weight')).toBe('f32');

    const source = await openFileSource(path);
    try {
      const h = await readGgufHeader(source);
      expect(h.metadata.get('general.file_type')).toBe(15);
      expect(h.metadata.get('general.quantization_version')).toBe(2);
    } finally {
      await source.close();
    }
    const model = await loadModel(path);
    const loaded = weightsByHfName(model.config, model.weights);
    for (const slot of llamaTensorSlots(SHAPE)) {
      const got = loaded.get(hfNameOfGguf(slot.name)!)!;
      const want = types.get(slot.name)!;
      expect(got.dtype, slot.name).toBe(want);
      if (slot.kind === 'norm') continue;
      const [cols, rows] = slot.dims as [number, number];
      expect(ggufTensorType('q4_k_m', slot.name, cols, SHAPE.numLayers, false)).toBe(want);
      const blocks = quantizeMatrix(randomTensorValues(slot, 5), rows, cols, want as 'q4_k').data as Uint8Array;
      const heads = slot.name.includes('attn_q') ? SHAPE.numHeads : slot.name.includes('attn_k') ? SHAPE.numKvHeads : 0;
      // The loader undoes llama.cpp's interleaved Q/K row order: whole stored rows move.
      const hfOrder = heads ? permuteRotaryRows(blocks, rows, blocks.length / rows, heads, 'toRotateHalf') : blocks;
      const bytes = new Uint8Array(got.data.buffer, got.data.byteOffset, got.data.byteLength);
      expect(Buffer.from(bytes).equals(Buffer.from(hfOrder)), slot.name).toBe(true);
    }
  });

  it('Q8_0: every matrix Q8_0 (output too), file type 7', () => {
    const { types } = randomLlamaQuantizedTensors(SHAPE, 'q8_0', 5);
    for (const [name, t] of types) expect(t, name).toBe(name.endsWith('norm.weight') ? 'f32' : 'q8_0');
  });
});

describe('cross-engine helpers', () => {
  it('randomDocuments: BOS then 256 scored positions per document, exactly the positions asked for', () => {
    const model = { tokenRange: [259, 400] as const } as unknown as Parameters<typeof randomDocuments>[0];
    const docs = randomDocuments(model, 600);
    expect(docs.map((d) => d.length - 1)).toEqual([256, 256, 88]);
    expect(docs.every((d) => d[0] === 1 && d.slice(1).every((t) => t >= 259 && t < 400))).toBe(true);
  });

  it('top2Gap and the largest gap at a disagreement', () => {
    expect(top2Gap([-1, -3, -1.5], 3)).toBeCloseTo(0.5, 12);
    const acc = new QualityAccumulator();
    acc.add([Math.log(0.5), Math.log(0.3), Math.log(0.2)], [Math.log(0.3), Math.log(0.5), Math.log(0.2)], 0, 3);
    acc.add([Math.log(0.9), Math.log(0.05), Math.log(0.05)], [Math.log(0.9), Math.log(0.05), Math.log(0.05)], 0, 3);
    expect(acc.result().top1Agreement).toBe(0.5);
    expect(acc.maxDisagreementGap()).toBeCloseTo(Math.log(0.5 / 0.3), 12);
  });

  it('crossEngineTargets: KL <= 2e-3 and top-1 >= 98% per kvq row', () => {
    const row = (klMean: number, top1Agreement: number) => ({ label: 'kvq auto', config: { side: 'kvq' as const, kv: 'auto' as const }, tokens: 10, nllMean: 1, perplexity: Math.E, klMean, top1Agreement, kvBytesPerToken: 1 });
    const r = { scheme: 'q8_0', model: { name: 'm' }, llamaCpp: row(0, 1), kvq: [row(1e-3, 0.99), row(3e-3, 0.99), row(1e-4, 0.97)], positions: 10, documents: 1 } as unknown as CrossEngineModelResult;
    expect(crossEngineTargets([r]).map((t) => t.met)).toEqual([true, false, false]);
  });
});

describe('cross-engine report section', () => {
  it('one row per file and kvq KV cache, with the resolved KV dtype, the gap at disagreements and met/no; merged reports keep every file', () => {
    const row = (kv: 'auto' | 'fp8_e4m3', kvDtype: string, klMean: number, top1Agreement: number) => ({ label: `kvq ${kv}`, config: { side: 'kvq' as const, kv }, kvDtype, tokens: 2048, nllMean: 4.1, perplexity: 60, klMean, top1Agreement, kvBytesPerToken: 1, maxDisagreementGap: 0.0123 });
    const result = {
      scheme: 'q4_k_m',
      model: { name: 'kvq-tiny-q4_k_m', origin: 'made by a test', weightType: 'Q4_K_M', fileBytes: 3 << 20, tensorTypes: { F32: 13, Q4_K: 30, Q6_K: 4 } },
      llamaCpp: { ...row('auto', 'f32', 0, 1), label: 'llama.cpp f32' },
      kvq: [row('auto', 'bf16', 8.7e-5, 0.9883), row('fp8_e4m3', 'e4m3fn', 3e-3, 0.97)],
      positions: 2048,
      documents: 9,
    } as unknown as CrossEngineModelResult;
    const base = { date: '2026-01-01T00:00:00.000Z', machine: { cpu: 'c', logicalCpus: 2, cpuFeatures: 'avx2', memoryGiB: 1, os: 'x', node: 'v', loadAverageAtStart: '0' }, versions: {}, settings: { threads: 2, repeats: 1, contexts: [512], decodeTokens: 8, scheduling: 'chrt', maxEvalTokens: 1, greedyTokens: 1, prefillChunk: 512 }, speed: [], quality: undefined, greedy: undefined, targets: [], files: [] };
    const merged = mergeReports([{ ...base, crossEngine: [result] }, base, { ...base, crossEngine: [{ ...result, scheme: 'q8_0' } as CrossEngineModelResult] }]);
    expect(merged.crossEngine?.map((r) => r.scheme)).toEqual(['q4_k_m', 'q8_0']);
    const md = benchmarkMarkdown(merged, { json: 'r.json', svg: 'c.svg' });
    expect(md).toContain('## Quantized weights: same file, both engines');
    expect(md).toContain('| Q4_K_M | kvq-tiny-q4_k_m | kvq auto (bf16) | 2048 | 8.70e-5 | 98.83% | 0.0123 | 4.1000 | 4.1000 | yes |');
    expect(md).toContain('| Q4_K_M | kvq-tiny-q4_k_m | kvq fp8_e4m3 (e4m3fn) | 2048 | 3.00e-3 | 97.00% | 0.0123 | 4.1000 | 4.1000 | **no** |');
    expect(md).toContain('| kvq-tiny-q4_k_m | 3.0 MiB | 13 F32, 30 Q4_K, 4 Q6_K | made by a test |');
    expect(md).toContain('quantizes the activations');
  });
});

// The same quantized file in both engines, only where node-llama-cpp was installed by the benchmark's own command.
const installed = isPeerInstalled();
describe.skipIf(!installed)('kvq-tiny quantized: the same GGUF file in llama.cpp and kvq (fast cross-engine check)', () => {
  for (const scheme of ['q8_0', 'q4_k_m'] as const) {
    it(`${scheme}: KL(llama.cpp || kvq) <= 2e-3 and top-1 >= 97% over ~256 positions`, async () => {
      const model = await prepareQuantizedTinyModel(scheme, dir);
      const tok = (await loadModel(modelTinyPath)).tokenizer;
      const { documents } = qualityDocuments((t) => tok.encode(t), 512, 256);
      const vocab = model.dims.vocabSize;
      const peer = await PeerRunner.open(defaultPeerDir(), model.path, 'f32', false, 520, 2);
      const kvq = await KvqRunner.open(model.path, 'float32', 520);
      const acc = new QualityAccumulator();
      try {
        for (const doc of documents) {
          const theirs: Float64Array[] = [];
          await peer.logProbRows(doc, vocab, (_pos, row) => theirs.push(Float64Array.from(row)));
          await kvq.logProbRows(doc, (pos, row) => acc.add(theirs[pos]!, row, doc[pos + 1]!, vocab));
        }
      } finally {
        await peer.dispose();
        kvq.dispose();
      }
      const r = acc.result();
      expect(r.tokens).toBeGreaterThanOrEqual(256);
      expect(r.klMean).toBeLessThanOrEqual(2e-3);
      expect(r.top1Agreement).toBeGreaterThanOrEqual(0.97);
    }, 120_000);
  }
});
