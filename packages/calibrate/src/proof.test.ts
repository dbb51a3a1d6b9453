// What calibration can and cannot do for a floating-point KV cache, shown on function-preserving variants of
// stories260K and on kvq-tiny as it is. Numbers are printed (KL divergence vs the KV `auto` model, nats/token).
import { join } from 'node:path';

import { convertToHf, LLM, loadModel, type LoadedModel } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { calibrate, type CalibrateOptions } from './calibrate.js';
import { writeCheckpoint } from './checkpoint/write.js';
import { formatReportTable } from './report.js';
import { CALIBRATION_TEXTS, EVALUATION_TEXTS, kvScaledVariant, meanKl, stories260KHf, tempDir } from './test-helpers.js';

const tmp = tempDir();
afterAll(() => tmp.remove());

type Setting = 'scale1' | 'tensor' | 'attn_head';

/** KL vs `reference` of a model folder served with FP8 e4m3 KV: scales 1.0, or calibrated and loaded from a checkpoint. */
async function klTable(reference: LLM, folder: string, docs: number[][], name: string, extra: Partial<CalibrateOptions> = {}) {
  const kl = async (model: string) => meanKl(reference, await LLM.create({ model, kvCacheDtype: 'fp8_e4m3', kvCacheMemory: 8 << 20 }), docs);
  const row = { scale1: await kl(folder) } as Record<Setting, number>;
  const reports: Record<string, string> = {};
  for (const strategy of ['tensor', 'attn_head'] as const) {
    const r = await calibrate({ model: folder, dataset: CALIBRATION_TEXTS, strategy, reportSamples: 4, ...extra });
    const out = join(tmp.dir, `${name}-${strategy}`);
    await writeCheckpoint({ model: folder, out, scales: r.scales, provenance: r.provenance });
    row[strategy] = await kl(out);
    reports[strategy] = formatReportTable(r.report, { perHead: true });
  }
  return { row, reports };
}

describe('scales matter only at the edges of the FP8 range (stories260K variants)', () => {
  let hf: string;
  let base: LoadedModel;
  let reference: LLM;
  let docs: number[][];
  const results: Record<string, Record<Setting, number>> = {};
  beforeAll(async () => {
    hf = await stories260KHf(tmp.dir);
    base = await loadModel(hf);
    reference = await LLM.create({ model: hf, kvCacheDtype: 'auto', kvCacheMemory: 8 << 20 });
    docs = EVALUATION_TEXTS.map((t) => reference.encode(t));
    results.unmodified = (await klTable(reference, hf, docs, 'unmodified')).row;
  });
  afterAll(() => {
    console.log('KL(auto || fp8_e4m3) on stories260K, nats/token:');
    console.table(results);
  });

  it('the variants compute the same function (KV auto logits agree with the unmodified model)', async () => {
    const a = join(tmp.dir, 'variant-a');
    const b = join(tmp.dir, 'variant-b');
    await convertToHf(kvScaledVariant(base, () => 64), a);
    await convertToHf(kvScaledVariant(base, (h) => (h === 0 ? 256 : 1 / 16)), b);
    for (const v of [a, b]) {
      const llm = await LLM.create({ model: v, kvCacheDtype: 'auto', kvCacheMemory: 8 << 20 });
      expect(await meanKl(reference, llm, docs)).toBeLessThan(1e-9);
    }
  });

  it('(a) K and V x64, Q and O /64: scale 1.0 saturates K and degrades sharply; calibrated scales recover the unmodified FP8 numbers', async () => {
    const a = join(tmp.dir, 'variant-a');
    const { row } = await klTable(reference, a, docs, 'a');
    results['(a) kv x64'] = row;
    const u = results.unmodified!;
    expect(row.scale1).toBeGreaterThan(5 * u.scale1);
    expect(row.scale1).toBeGreaterThan(0.05);
    // Power-of-two rescaling with calibrated scales is exact: same FP8 codes, same logits.
    expect(row.tensor).toBe(u.tensor);
    expect(row.attn_head).toBe(u.attn_head);
    const none = await calibrate({ model: a, method: 'none', dataset: CALIBRATION_TEXTS, reportSamples: 4 });
    expect(Math.max(...none.report.layers.map((l) => l.k.saturated))).toBeGreaterThan(0.001);
    expect(Math.max(...none.report.layers.map((l) => l.v.saturated))).toBe(0); // V x64 stays below 448: only K saturates
  });

  it('(b) one KV head x256, the others x1/16: per-tensor scales push the small heads into subnormals; per-head scales recover the unmodified numbers', async () => {
    const b = join(tmp.dir, 'variant-b');
    const { row, reports } = await klTable(reference, b, docs, 'b');
    results['(b) head0 x256, others x1/16'] = row;
    const u = results.unmodified!;
    expect(row.attn_head).toBe(u.attn_head);
    expect(row.tensor).toBeGreaterThan(1.3 * row.attn_head);
    const t = await calibrate({ model: b, dataset: CALIBRATION_TEXTS, reportSamples: 4 });
    const h = await calibrate({ model: b, dataset: CALIBRATION_TEXTS, strategy: 'attn_head', reportSamples: 4 });
    const smallHeadSubnormal = (r: typeof t) => Math.min(...r.report.layers.map((l) => l.v.heads[1]!.subnormal));
    expect(smallHeadSubnormal(t)).toBeGreaterThan(0.1);
    expect(smallHeadSubnormal(h)).toBeLessThan(0.05);
    console.log(`(b) per-tensor report:\n${reports.tensor!.split('\n').slice(0, 20).join('\n')}`);
  });
});

describe('kvq-tiny as trained: every method, reported (ordering between calibrated methods is noise here)', () => {
  it('all methods load from their checkpoints and stay close to KV auto', async () => {
    const reference = await LLM.create({ model: modelTinyPath, kvCacheDtype: 'auto', kvCacheMemory: 16 << 20 });
    const evalTexts = [
      'And God said, Let there be light: and there was light.',
      'A journey of a thousand miles begins with a single step.',
      'The LORD is my shepherd; I shall not want.',
      'You will be successful in your work.',
    ];
    const docs = evalTexts.map((t) => reference.encode(t));
    const chats = [
      'In the beginning God created the heaven and the earth.',
      'Blessed are the meek: for they shall inherit the earth.',
      'Your lucky number is seven, and a surprise awaits you.',
      'He that walketh with wise men shall be wise.',
      'Honesty is the best policy, but silence is golden.',
      'The fear of the LORD is the beginning of knowledge.',
      'To every thing there is a season, and a time to every purpose.',
      'You will soon meet a tall stranger with good news.',
    ].map((t) => ({ messages: [{ role: 'user', content: `Continue: ${t.slice(0, 24)}` }, { role: 'assistant', content: t.slice(24) }] }));
    const rows: Record<string, { klTensor: number; klHead: number }> = {};
    for (const method of ['none', 'random', 'dataset'] as const) {
      const row = { klTensor: 0, klHead: 0 };
      for (const strategy of ['tensor', 'attn_head'] as const) {
        const r = await calibrate({ model: modelTinyPath, method, dataset: chats, strategy, maxSeqLen: 256, reportSamples: 2 });
        const out = join(tmp.dir, `tiny-${method}-${strategy}`);
        await writeCheckpoint({ model: modelTinyPath, out, scales: r.scales, provenance: r.provenance });
        const kl = await meanKl(reference, await LLM.create({ model: out, kvCacheDtype: 'fp8_e4m3', kvCacheMemory: 16 << 20 }), docs);
        expect(Number.isFinite(kl)).toBe(true);
        expect(kl).toBeLessThan(0.1);
        row[strategy === 'tensor' ? 'klTensor' : 'klHead'] = kl;
      }
      rows[method] = row;
    }
    console.log('KL(auto || fp8_e4m3) on kvq-tiny, nats/token:');
    console.table(rows);
  });
});
