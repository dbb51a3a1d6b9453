import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { loadModel, quantizeModel } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterAll, describe, expect, it } from 'vitest';

import { calibrate } from './calibrate.js';
import { writeCheckpoint } from './checkpoint/write.js';

const tmp = mkdtempSync(join(tmpdir(), 'kvq-calibrate-fp8w-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('calibrating an FP8-weight compressed-tensors checkpoint', () => {
  it('takes the checkpoint as input and writes one that loads with FP8 weights AND the FP8 KV scheme', async () => {
    const fp8 = join(tmp, 'fp8');
    await quantizeModel(modelTinyPath, fp8, 'fp8');
    const r = await calibrate({ model: fp8, method: 'random', maxSeqLen: 32, seed: 3, reportSamples: 0, backend: 'reference' });
    const out = join(tmp, 'fp8-kv');
    await writeCheckpoint({ model: fp8, scales: r.scales, out });
    const m = await loadModel(out);
    expect(m.weights.layers[0]!.q.dtype).toBe('fp8_e4m3');
    expect(m.weights.layers[5]!.down.scale!.length).toBe(256);
    expect(m.checkpointKvScales!.method).toBe('compressed-tensors');
    for (let l = 0; l < m.config.numLayers; l++) {
      // Stored in the model dtype (bf16): equal to the calibrated scale within bf16 rounding.
      for (const slot of ['k', 'v'] as const) {
        const got = m.kvScales!.layers[l]![slot][0]!;
        const want = r.scales.layers[l]![slot][0]!;
        expect(got).toBeGreaterThan(0);
        expect(Math.abs(got / want - 1)).toBeLessThanOrEqual(2 ** -8);
      }
    }
    expect(m.warnings.filter((w) => w.includes('not used'))).toEqual([]);
  }, 120_000);
});
