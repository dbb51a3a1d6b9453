import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { fixturePath } from '@kvq/fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LLM } from '../llm/llm.js';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { splitDocuments } from '../quality/quality.js';
import { tempDir, testData } from '../testing/fixtures.js';
import { quantizeModel } from './quantize.js';

/**
 * kvq's NLL of the fp8 and w4a16 kvq-tiny checkpoints `kvq quantize` writes equals the NLL of an independent float64
 * numpy forward pass over the dequantized weights (tooling/ct-reference/forward.py), within 1e-4 relative. The numpy
 * results are recorded in @kvq/fixtures (reference/kvq-tiny-compressed-tensors.json) with the SHA-256 of the
 * checkpoint they were computed on, so numpy is not needed here.
 *
 * Regenerate: `KVQ_CT_REFERENCE_OUT=/tmp/ct npx vitest run src/quantize/ct-reference.test.ts` (writes the checkpoints
 * and ids.json there), then `python3 tooling/ct-reference/forward.py /tmp/ct/<scheme> --ids /tmp/ct/ids.json` for
 * bf16 (the kvq-tiny folder), fp8 and w4a16, collected by `python3 tooling/ct-reference/record.py /tmp/ct`.
 */
interface Recorded {
  readonly documents: number[][];
  readonly results: Record<'bf16' | 'fp8' | 'w4a16', { readonly sha256: string | null; readonly tokens: number; readonly nll_sum: number; readonly nll_mean: number }>;
}

const FIXTURE = 'reference/kvq-tiny-compressed-tensors.json' as const;
const DOCS = 2;
const TOKENS = 64;

describe('compressed-tensors checkpoints of kvq-tiny against the float64 numpy reference', () => {
  let bf16: LoadedModel;
  let documents: number[][];
  let dir: string;
  let cleanup: () => Promise<void>;
  const outDir = process.env.KVQ_CT_REFERENCE_OUT;
  const recordedPath = (() => {
    try {
      return fixturePath(FIXTURE);
    } catch {
      return undefined;
    }
  })();
  const recorded = recordedPath && existsSync(recordedPath) ? (JSON.parse(readFileSync(recordedPath, 'utf8')) as Recorded) : undefined;

  beforeAll(async () => {
    bf16 = await loadModel(testData.kvqTiny);
    documents = splitDocuments(readFileSync(testData.evalText, 'utf8'))
      .slice(0, DOCS)
      .map((d) => bf16.tokenizer.encode(d).slice(0, TOKENS));
    ({ dir, cleanup } = await tempDir('kvq-ct-reference-'));
    if (outDir) {
      await mkdir(outDir, { recursive: true });
      await writeFile(join(outDir, 'ids.json'), `${JSON.stringify({ documents })}\n`);
    }
  }, 60_000);
  afterAll(async () => cleanup?.());

  it('the recorded token ids are kvq-tiny\'s tokenization of the first evaluation documents', () => {
    if (outDir && !recorded) return; // regenerating
    expect(recorded, `${FIXTURE} is missing from @kvq/fixtures`).toBeDefined();
    expect(recorded!.documents).toEqual(documents);
  });

  const nllOf = async (model: LoadedModel, int4Activations?: 'q16' | 'f32'): Promise<{ sum: number; tokens: number }> => {
    const llm = await LLM.create({ model, backend: 'reference', kvCacheMemory: 8 << 20, ...(int4Activations ? { int4Activations } : {}) });
    let sum = 0;
    let tokens = 0;
    for (const doc of documents) {
      const r = await llm.score(doc);
      sum += r.nllSum;
      tokens += r.count;
    }
    return { sum, tokens };
  };

  it('bf16 (the unquantized folder, as a control of the reference itself)', async () => {
    if (outDir && !recorded) return;
    const ref = recorded!.results.bf16;
    const kvq = await nllOf(bf16);
    expect(kvq.tokens).toBe(ref.tokens);
    expect(Math.abs(kvq.sum / ref.nll_sum - 1)).toBeLessThan(1e-4);
  }, 120_000);

  it.each(['fp8', 'w4a16'] as const)('%s', async (scheme) => {
    const out = join(dir, scheme);
    await quantizeModel(bf16, out, scheme);
    const sha = createHash('sha256').update(readFileSync(join(out, 'model.safetensors'))).digest('hex');
    if (outDir) await cp(out, join(outDir, scheme), { recursive: true });
    if (outDir && !recorded) return;
    const ref = recorded!.results[scheme];
    // The numpy result belongs to these exact bytes; a changed quantizer needs the fixture regenerated (see above).
    expect(sha, `${scheme} checkpoint bytes changed: regenerate ${FIXTURE}`).toBe(ref.sha256);
    const model = await loadModel(out);
    const kvq = await nllOf(model);
    expect(kvq.tokens).toBe(ref.tokens);
    expect(Math.abs(kvq.sum / ref.nll_sum - 1)).toBeLessThan(1e-4);
    if (scheme === 'w4a16') {
      // The default above rounds the activations to 16-bit blocks (int4Activations 'q16'); float32 ones match too,
      // and the two differ (the option reaches the kernels).
      const f32 = await nllOf(model, 'f32');
      expect(Math.abs(f32.sum / ref.nll_sum - 1)).toBeLessThan(1e-4);
      expect(f32.sum).not.toBe(kvq.sum);
    }
    // And the quantization moved the NLL measurably (the check would not pass on the bf16 weights by accident).
    expect(Math.abs(ref.nll_sum / recorded!.results.bf16.nll_sum - 1)).toBeGreaterThan(1e-5);
  }, 180_000);
});

/**
 * Checkpoints written WITHOUT kvq (tooling/ct-reference/make_checkpoint.py: numpy quantizers, hand-written safetensors,
 * BF16 scales, asymmetric int4 with zero points packed along the output dim): kvq loads them and its NLL equals the
 * float64 numpy forward pass over the same dequantized weights within 1e-4 relative.
 */
describe('independent compressed-tensors checkpoints (numpy-written random Llama)', () => {
  const expected = JSON.parse(readFileSync(fixturePath('reference/ct-random.json'), 'utf8')) as {
    documents: number[][];
    results: Record<'fp8' | 'w4a16-asym', { tokens: number; nll_sum: number }>;
  };
  it.each(['fp8', 'w4a16-asym'] as const)('%s', async (name) => {
    const dir = join(fixturePath(`models/ct-random/${name}/config.json`), '..');
    const model = await loadModel(dir);
    const q = model.weights.layers[1]!.q;
    expect(q.dtype).toBe(name === 'fp8' ? 'fp8_e4m3' : 'int4');
    if (name === 'w4a16-asym') {
      expect(q.groupSize).toBe(32);
      expect(q.zeroPoint).toBeDefined();
    } else {
      expect([...q.inputScale!]).toEqual([0.0625]);
    }
    expect(model.weights.lmHead.dtype).toBe('f32'); // ignored
    expect(model.warnings.filter((w) => w.includes('not used'))).toEqual([]);
    const llm = await LLM.create({ model, backend: 'reference', kvCacheMemory: 4 << 20 }); // f32 model: an f32 KV cache
    let sum = 0;
    let tokens = 0;
    for (const doc of expected.documents) {
      const r = await llm.score(doc);
      sum += r.nllSum;
      tokens += r.count;
    }
    expect(tokens).toBe(expected.results[name].tokens);
    expect(Math.abs(sum / expected.results[name].nll_sum - 1)).toBeLessThan(1e-4);
  }, 60_000);
});
