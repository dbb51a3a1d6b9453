import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { loadModel } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { captureOutput } from '@kvq/test-utils';
import { afterAll, describe, expect, it } from 'vitest';

import { main } from '../../main.js';

const tmp = mkdtempSync(join(tmpdir(), 'kvq-quantize-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('kvq quantize / kvq convert --outtype', () => {
  it('quantize kvq-tiny (the default model) to w4a16 and q4_k_m; the outputs load with their stored types', async () => {
    const c = captureOutput();
    expect(await main(['quantize', '--scheme', 'w4a16', '--out', join(tmp, 'w4'), '--json'], c.io), c.err()).toBe(0);
    const report = JSON.parse(c.out()) as { model: string; format: string; groupSize: number; tensorTypes: Record<string, number> };
    expect(report).toMatchObject({ model: 'kvq-tiny', format: 'compressed-tensors', groupSize: 64 }); // 704 columns: 128 does not divide
    expect(report.tensorTypes.I32).toBe(42); // 6 layers x 7 Linear weight_packed
    const w4 = await loadModel(join(tmp, 'w4'));
    expect(w4.weights.layers[0]!.gate.dtype).toBe('int4');

    const g = captureOutput();
    expect(await main(['quantize', '-m', modelTinyPath, '--scheme', 'Q4_K_M', '--out', join(tmp, 'tiny.gguf')], g.io), g.err()).toBe(0);
    expect(g.out()).toMatch(/^wrote .*tiny\.gguf \(gguf, q4_k_m\): /);
    const q4 = await loadModel(join(tmp, 'tiny.gguf'));
    expect(q4.weights.layers[0]!.q.dtype).toBe('q4_k');
    expect(q4.weights.layers[2]!.v.dtype).toBe('q6_k'); // llama.cpp's use_more_bits layer
    expect(q4.weights.layers[2]!.down.dtype).toBe('q8_0'); // Q6_K falls back to Q8_0: 704 is not a multiple of 256
    expect(q4.weights.layers[0]!.down.dtype).toBe('q5_0'); // Q4_K falls back to Q5_0
  }, 60_000);

  it('convert --from hf --outtype q8_0 writes a GGUF kvq loads back', async () => {
    const c = captureOutput();
    const out = join(tmp, 'tiny-q8.gguf');
    expect(await main(['convert', '--from', 'hf', modelTinyPath, '--outtype', 'q8_0', '--out', out], c.io), c.err()).toBe(0);
    const m = await loadModel(out);
    expect(m.weights.embedTokens.dtype).toBe('q8_0');
    expect(m.weights.layers[5]!.down.dtype).toBe('q8_0');
    expect(m.weights.finalNorm.dtype).toBe('f32');
    // Existing output without --overwrite, and bad options: usage errors (exit 2).
    expect(await main(['convert', '--from', 'hf', modelTinyPath, '--outtype', 'q8_0', '--out', out], captureOutput().io)).toBe(2);
    expect(await main(['convert', '--from', 'hf', modelTinyPath, '--outtype', 'q3_k', '--out', join(tmp, 'x.gguf')], captureOutput().io)).toBe(2);
    expect(await main(['convert', '--from', 'hf', modelTinyPath, '--out', join(tmp, 'y.gguf')], captureOutput().io)).toBe(2);
  }, 60_000);

  it('usage errors exit 2 with a message naming the option', async () => {
    for (const [args, pattern] of [
      [['quantize', '--out', join(tmp, 'a')], /needs --scheme/],
      [['quantize', '--scheme', 'int3', '--out', join(tmp, 'a')], /--scheme: .*not one of fp8, w4a16/],
      [['quantize', '--scheme', 'fp8'], /needs --out/],
      [['quantize', '--scheme', 'fp8', '--group-size', '64', '--out', join(tmp, 'a')], /--group-size applies to --scheme w4a16 only/],
      [['quantize', '--scheme', 'w4a16', '--group-size', '48', '--out', join(tmp, 'b')], /group size 48 does not divide/],
    ] as const) {
      const c = captureOutput();
      expect(await main([...args], c.io), args.join(' ')).toBe(2);
      expect(c.err()).toMatch(pattern);
    }
  }, 60_000);
});
