import { describe, expect, it } from 'vitest';

import { alternate, bestPeer, shortReason, speedTargets, summarize, type ModelSpeedReport, type PeerBenchmarkReport } from '../benchmark.js';
import type { Configuration, SpeedResult } from '../protocol.js';
import { configLabel } from '../protocol.js';
import { benchmarkMarkdown, extractNotes, NOTES_END, NOTES_START } from './markdown.js';
import { decodeChartSvg, niceAxis } from './svg.js';
import { chartPanels, mergeReports } from './write.js';

function run(config: Configuration, decode: Record<number, number>, pp: number, rss = 100 << 20): SpeedResult {
  const contexts = Object.keys(decode).map(Number);
  return {
    kind: 'speed',
    label: configLabel(config),
    config,
    loadMs: 10,
    contexts: contexts.map((c) => ({ context: c, prefillMs: (c / pp) * 1000, prefillTokensPerSecond: pp, decodeTokensPerSecond: decode[c]! })),
    peakRssBytes: rss,
    kvBytesPerToken: 1000,
    engine: { engine: config.side },
    scheduling: 'SCHED_RR priority 1',
  };
}

const E4M3: Configuration = { side: 'kvq', kv: 'fp8_e4m3' };
const F16: Configuration = { side: 'llama.cpp', kv: 'f16', flashAttention: false };
const F16FA: Configuration = { side: 'llama.cpp', kv: 'f16', flashAttention: true };
const Q8: Configuration = { side: 'llama.cpp', kv: 'q8_0', flashAttention: true };

function modelReport(): ModelSpeedReport {
  const runs = [
    run(E4M3, { 512: 100, 2048: 90, 8192: 50 }, 800),
    run(E4M3, { 512: 110, 2048: 80, 8192: 70 }, 700),
    run(E4M3, { 512: 90, 2048: 85, 8192: 60 }, 900),
    run(F16, { 512: 120, 2048: 80, 8192: 40 }, 600),
    run(F16FA, { 512: 60, 2048: 70, 8192: 65 }, 1000),
    run(Q8, { 512: 95, 2048: 90, 8192: 55 }, 500),
  ];
  const labels = [...new Set(runs.map((r) => r.label))];
  return {
    model: { name: 'm', origin: 'test', weightType: 'F16', dims: { numLayers: 1, numKvHeads: 1, headDim: 64, vocabSize: 10, hiddenSize: 64, numHeads: 1, intermediateSize: 8, contextLength: 9000 }, tokenRange: [0, 10], fileBytes: 1 },
    contexts: [512, 2048, 8192],
    summaries: labels.map((l) => summarize(runs.filter((r) => r.label === l))),
    skipped: [{ label: 'llama.cpp q8_0', reason: 'a quantized V cache needs flash attention' }],
    runs,
  };
}

describe('speed summaries and targets', () => {
  it('summarize takes medians per metric over the runs', () => {
    const s = modelReport().summaries.find((x) => x.label === 'kvq fp8_e4m3')!;
    expect(s.runs).toBe(3);
    expect(s.decodeTokensPerSecond).toEqual({ 512: 100, 2048: 85, 8192: 60 });
    expect(s.promptTokensPerSecond).toBe(800);
    expect(s.ttftMs).toBeCloseTo((512 / 800) * 1000, 9);
  });

  it("bestPeer picks llama.cpp's best configuration for a metric, optionally among one KV type", () => {
    const s = modelReport().summaries;
    expect(bestPeer(s, (x) => x.decodeTokensPerSecond[512]!)!.label).toBe('llama.cpp f16');
    expect(bestPeer(s, (x) => x.decodeTokensPerSecond[8192]!, (c) => c.kv === 'f16')!.label).toBe('llama.cpp f16 fa');
    expect(bestPeer(s, (x) => x.decodeTokensPerSecond[8192]!, (c) => c.kv === 'q4_0')).toBeUndefined();
  });

  it('speedTargets: f16 at >= 2048 against the faster FA setting, q8_0 at every context, prompt >= 0.8x', () => {
    const t = speedTargets(modelReport());
    const get = (re: RegExp) => t.find((x) => re.test(x.target))!;
    expect(get(/decode @2048: kvq fp8_e4m3 >= 1.0x llama.cpp f16 /)).toMatchObject({ measured: '1.06x', met: true }); // 85 / 80
    expect(get(/decode @8192: kvq fp8_e4m3 >= 1.0x llama.cpp f16 fa/)).toMatchObject({ measured: '0.92x', met: false }); // 60 / 65
    expect(t.some((x) => /decode @512: .* f16/.test(x.target))).toBe(false);
    expect(get(/decode @512: kvq fp8_e4m3 >= 1.0x llama.cpp q8_0 fa/)).toMatchObject({ measured: '1.05x', met: true });
    expect(get(/prompt processing/)).toMatchObject({ measured: '0.80x', met: true }); // 800 / 1000
  });

  it('shortReason keeps the first line and the first error line of a child failure', () => {
    const msg = 'm-kvq_auto-r0: exited with 1\nnode:internal/modules/esm/resolve:283\n    throw new X(\n\nError [ERR_MODULE_NOT_FOUND]: Cannot find module a\n    at f (x:1)';
    expect(shortReason(msg)).toBe('m-kvq_auto-r0: exited with 1: Error [ERR_MODULE_NOT_FOUND]: Cannot find module a');
  });

  it('alternate interleaves the engines', () => {
    expect(alternate<number | string>([1, 2, 3], ['a'])).toEqual([1, 'a', 2, 3]);
  });
});

function report(): PeerBenchmarkReport {
  return {
    date: '2026-01-01T00:00:00.000Z',
    machine: { cpu: 'test cpu', logicalCpus: 2, cpuFeatures: 'avx2', memoryGiB: 1, os: 'x', node: 'v20', loadAverageAtStart: '0 0 0' },
    versions: { 'node-llama-cpp': '3.21.1' },
    settings: { threads: 2, repeats: 3, contexts: [512, 2048, 8192], decodeTokens: 64, scheduling: 'chrt', maxEvalTokens: 100, greedyTokens: 128, prefillChunk: 512 },
    speed: [modelReport()],
    quality: undefined,
    greedy: undefined,
    targets: speedTargets(modelReport()),
    files: [],
  };
}

describe('report', () => {
  it('markdown has the tables, the ratios, the targets and keeps the notes between the markers', () => {
    const md = benchmarkMarkdown(report(), { json: 'r.json', svg: 'c.svg' }, 'my analysis');
    expect(md).toContain('| **kvq fp8_e4m3** | 800 | 640 | 100.0 | 85.0 | 60.0 |');
    expect(md).toContain('![decode tokens/s vs context length](c.svg)');
    expect(md).toMatch(/\| decode @8192: kvq fp8_e4m3 >= 1.0x llama.cpp f16 fa .* \| 0.92x \| \*\*no\*\* \|/);
    expect(md).toContain('Not run: llama.cpp q8_0 (a quantized V cache needs flash attention).');
    expect(md).toContain(`${NOTES_START}\nmy analysis\n${NOTES_END}`);
    expect(extractNotes(md)).toBe('my analysis');
    expect(extractNotes('no markers')).toBeUndefined();
  });

  it('mergeReports concatenates speed sections and targets, keeps the first quality', () => {
    const a = report();
    const b = { ...report(), speed: [{ ...modelReport(), model: { ...modelReport().model, name: 'big' } }], failures: ['x'] };
    const m = mergeReports([a, b]);
    expect(m.speed.map((s) => s.model.name)).toEqual(['m', 'big']);
    expect(m.targets.length).toBe(a.targets.length + b.targets.length);
    expect(m.failures).toEqual(['x']);
    expect(() => mergeReports([])).toThrow(/at least one report/);
  });

  it('niceAxis covers the maximum with a 1/2/2.5/5 step', () => {
    expect(niceAxis(97)).toEqual({ top: 100, step: 20 });
    expect(niceAxis(1234)).toEqual({ top: 1250, step: 250 });
    expect(niceAxis(0)).toEqual({ top: 1, step: 0.2 });
  });

  it('SVG chart: one path per configuration, every point inside the drawing', () => {
    const svg = decodeChartSvg(chartPanels(report()), 'title & more');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg).toContain('title &amp; more');
    expect(svg.match(/<path /g)!.length).toBe(4);
    const [, w, h] = /viewBox="0 0 (\d+) (\d+)"/.exec(svg)!.map(Number) as [number, number, number];
    for (const m of svg.matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)"/g)) {
      expect(Number(m[1])).toBeLessThanOrEqual(w);
      expect(Number(m[2])).toBeLessThanOrEqual(h);
    }
    expect(svg.match(/<circle /g)!.length).toBe(3); // kvq points (3 contexts)
    expect(svg.match(/stroke-dasharray/g)!.length).toBe(3 * 2); // llama.cpp lines + legend
  });
});
