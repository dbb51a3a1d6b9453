import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { PeerBenchmarkReport } from '../benchmark.js';
import { BenchPeerError } from '../errors.js';
import { benchmarkMarkdown, extractNotes } from './markdown.js';
import { decodeChartSvg, type ChartPanel } from './svg.js';

/**
 * One report from several runs (e.g. the main run plus a separate TinyLlama run): speed sections and targets
 * concatenated, quality/greedy/machine/settings from the first report that has them. Each model's table keeps its
 * own number of runs (`summaries[].runs`).
 */
export function mergeReports(reports: readonly PeerBenchmarkReport[]): PeerBenchmarkReport {
  const first = reports[0];
  if (!first) throw new BenchPeerError('INVALID_ARGUMENT', 'mergeReports needs at least one report', { field: 'reports' });
  const failures = reports.flatMap((r) => r.failures ?? []);
  return {
    ...first,
    speed: reports.flatMap((r) => r.speed),
    targets: reports.flatMap((r) => r.targets),
    quality: reports.find((r) => r.quality)?.quality,
    greedy: reports.find((r) => r.greedy)?.greedy,
    ...(reports.some((r) => r.crossEngine) ? { crossEngine: reports.flatMap((r) => r.crossEngine ?? []) } : {}),
    ...(failures.length ? { failures } : {}),
    files: [],
  };
}

/** Chart panels of a report: one per model, one series per configuration. */
export function chartPanels(report: PeerBenchmarkReport): ChartPanel[] {
  return report.speed.map((r) => ({
    title: `${r.model.name} (${r.model.weightType})`,
    series: r.summaries.map((s) => ({
      label: s.label,
      ours: s.config.side === 'kvq',
      points: r.contexts.map((c) => ({ x: c, y: s.decodeTokensPerSecond[c] ?? Number.NaN })),
    })),
  }));
}

/**
 * Write `outDir/benchmarks.md`, `outDir/benchmarks/peer-results.json` and `outDir/benchmarks/decode-vs-context.svg`.
 * The notes section of an existing benchmarks.md is kept.
 * @returns the files written
 * @throws BenchPeerError `IO_ERROR`
 */
export async function writeReport(report: PeerBenchmarkReport, outDir: string): Promise<string[]> {
  const md = join(outDir, 'benchmarks.md');
  const json = join(outDir, 'benchmarks', 'peer-results.json');
  const svg = join(outDir, 'benchmarks', 'decode-vs-context.svg');
  try {
    await mkdir(join(outDir, 'benchmarks'), { recursive: true });
    const notes = existsSync(md) ? extractNotes(await readFile(md, 'utf8')) : undefined;
    await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
    await writeFile(svg, decodeChartSvg(chartPanels(report), `Decode tokens/s vs context, ${report.settings.threads} threads (medians; kvq solid, llama.cpp dashed)`));
    await writeFile(md, benchmarkMarkdown(report, { json: 'benchmarks/peer-results.json', svg: 'benchmarks/decode-vs-context.svg' }, notes));
  } catch (cause) {
    throw new BenchPeerError('IO_ERROR', `cannot write the report into ${outDir}: ${(cause as Error).message}`, { file: outDir, cause });
  }
  return [md, json, svg];
}
