// What a measured child process runs: one job, one configuration per process for speed (so peak RSS is the
// configuration's own), its result as JSON.
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';

import { loadModel } from '@kvq/engine';

import { BenchPeerError } from './errors.js';
import { calibratedHeadScales, KvqRunner, type GenerationTiming } from './kvq/runner.js';
import { QualityAccumulator } from './metrics.js';
import { PeerRunner } from './peer/runner.js';
import {
  configLabel,
  KV_ELEMENT_BYTES,
  kvBytesPerToken,
  promptTokens,
  type Configuration,
  type GreedyJob,
  type GreedyResult,
  type Job,
  type JobResult,
  type KvqKv,
  type PeerKv,
  type QualityJob,
  type QualityResult,
  type QualityRow,
  type SpeedJob,
  type SpeedResult,
} from './protocol.js';

/** The scheduling policy and real-time priority of this process (Linux `/proc/self/stat`), e.g. `SCHED_RR priority 1`. */
export function schedulingPolicy(): string {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).trim().split(/\s+/);
    // fields[0] is field 3 (state); rt_priority is field 40, policy field 41 (proc(5)).
    const priority = Number(fields[37]);
    const policy = ['SCHED_OTHER', 'SCHED_FIFO', 'SCHED_RR', 'SCHED_BATCH', 'SCHED_ISO', 'SCHED_IDLE', 'SCHED_DEADLINE'][Number(fields[38])] ?? `policy ${fields[38]}`;
    return priority > 0 ? `${policy} priority ${priority}` : policy;
  } catch {
    return 'not available';
  }
}

/** A speed or greedy engine behind one interface. */
interface Generator {
  generate(prompt: readonly number[], count: number): GenerationTiming | Promise<GenerationTiming>;
  info(): Record<string, string | number | boolean>;
  dispose(): void | Promise<void>;
}

async function openGenerator(config: Configuration, modelPath: string, peerDir: string, maxTokens: number, threads: number): Promise<{ gen: Generator; kvBytes: (dims: SpeedJob['dims']) => number }> {
  if (config.side === 'kvq') {
    const r = await KvqRunner.open(modelPath, config.kv as KvqKv, maxTokens);
    return { gen: r, kvBytes: () => r.llm.kvBytesPerToken };
  }
  const r = await PeerRunner.open(peerDir, modelPath, config.kv as PeerKv, config.flashAttention ?? false, maxTokens, threads);
  return { gen: r, kvBytes: (dims) => kvBytesPerToken(dims, KV_ELEMENT_BYTES[config.kv]!) };
}

/** Measure one configuration: load, warm up, then for each context a fresh prompt, its prefill and decode. */
export async function runSpeedJob(job: SpeedJob): Promise<SpeedResult> {
  const maxContext = Math.max(...job.contexts);
  const t0 = performance.now();
  const { gen, kvBytes } = await openGenerator(job.config, job.modelPath, job.peerDir, maxContext + job.decodeTokens + 16, job.threads);
  const loadMs = performance.now() - t0;
  try {
    // Warm-up: page in the weights, start the thread pools, size the scratch buffers for a full 512-token chunk.
    await gen.generate(promptTokens(Math.min(512, Math.max(...job.contexts)), job.tokenRange, job.seed ^ 0x5eed), 4);
    const contexts = [];
    for (const context of job.contexts) {
      const t = await gen.generate(promptTokens(context, job.tokenRange, job.seed + context), job.decodeTokens);
      contexts.push({
        context,
        prefillMs: t.firstMs,
        prefillTokensPerSecond: context / (t.firstMs / 1000),
        decodeTokensPerSecond: (job.decodeTokens - 1) / ((t.lastMs - t.firstMs) / 1000),
      });
    }
    return {
      kind: 'speed',
      label: configLabel(job.config),
      config: job.config,
      loadMs,
      contexts,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      kvBytesPerToken: kvBytes(job.dims),
      engine: gen.info(),
      scheduling: schedulingPolicy(),
    };
  } finally {
    await gen.dispose();
  }
}

/** Greedy tokens of one configuration. */
export async function runGreedyJob(job: GreedyJob): Promise<GreedyResult> {
  const { gen } = await openGenerator(job.config, job.modelPath, job.peerDir, job.promptTokens.length + job.maxTokens + 16, job.threads);
  try {
    const t = await gen.generate(job.promptTokens, job.maxTokens);
    const text = gen instanceof KvqRunner ? gen.llm.model.tokenizer.decode(t.tokens, { skipSpecialTokens: true }) : (gen as PeerRunner).detokenize(t.tokens);
    return { kind: 'greedy', label: configLabel(job.config), tokens: t.tokens, text };
  } finally {
    await gen.dispose();
  }
}

/**
 * Score every document with each configuration and compare with the first (the reference) position by position.
 * The reference's rows are kept in memory (float64) and dumped as float32 for the cross-engine check.
 */
export async function runQualityJob(job: QualityJob): Promise<QualityResult> {
  const vocab = job.dims.vocabSize;
  const maxLen = Math.max(...job.documents.map((d) => d.length));
  const positions = job.documents.reduce((s, d) => s + d.length - 1, 0);
  const external = job.externalReference ? await readFloat32(job.externalReference, positions * vocab) : undefined;
  const reference = external ?? new Float64Array(positions * vocab);
  const offsets: number[] = [];
  job.documents.reduce((at, d) => (offsets.push(at), at + (d.length - 1) * vocab), 0);
  const rows: QualityRow[] = [];
  let calibration = 'not used';
  const model = job.side === 'kvq' ? await loadModel(job.modelPath) : undefined;
  for (let ci = 0; ci < job.configs.length; ci++) {
    const config = job.configs[ci]!;
    const acc = new QualityAccumulator();
    const visit = (d: number) => (pos: number, row: Float64Array) => {
      const at = offsets[d]! + pos * vocab;
      if (ci === 0 && !external) reference.set(row, at);
      acc.add(reference.subarray(at, at + vocab), row, job.documents[d]![pos + 1]!, vocab);
    };
    let kvBytes: number;
    let kvDtype: string | undefined;
    if (job.side === 'kvq') {
      let scales;
      if (config.calibrated) {
        scales = await calibratedHeadScales(model!, job.calibrationTexts);
        calibration = `@kvq/calibrate dataset method, static min-max observer, per KV head (attn_head), e4m3fn, ${job.calibrationTexts.length} samples; k/v scale ranges ${scaleRange(scales.layers.map((l) => l.k))} / ${scaleRange(scales.layers.map((l) => l.v))}`;
      }
      const r = await KvqRunner.open(model!, config.kv as KvqKv, maxLen + 1, scales);
      try {
        for (let d = 0; d < job.documents.length; d++) await r.logProbRows(job.documents[d]!, visit(d));
        kvBytes = r.llm.kvBytesPerToken;
        kvDtype = String(r.llm.kvDtype);
      } finally {
        r.dispose();
      }
    } else {
      const r = await PeerRunner.open(job.peerDir, job.modelPath, config.kv as PeerKv, config.flashAttention ?? false, maxLen + 8, job.threads);
      try {
        for (let d = 0; d < job.documents.length; d++) await r.logProbRows(job.documents[d]!, vocab, visit(d));
        kvBytes = kvBytesPerToken(job.dims, KV_ELEMENT_BYTES[config.kv]!);
      } finally {
        await r.dispose();
      }
    }
    rows.push({ label: configLabel(config), config, kvBytesPerToken: kvBytes, ...(kvDtype ? { kvDtype } : {}), ...acc.result(), ...(external ? { maxDisagreementGap: acc.maxDisagreementGap() } : {}) });
  }
  if (!external) await writeFile(job.referenceDump, Float32Array.from(reference));
  const otherSide = job.side === 'kvq' ? 'llama.cpp' : 'kvq';
  return { kind: 'quality', side: job.side, reference: external ? `${otherSide} (${job.externalReference})` : configLabel(job.configs[0]!), rows, calibration, positions };
}

/** A float32 dump of `count` values (the other engine's reference log-probabilities). */
async function readFloat32(path: string, count: number): Promise<Float32Array> {
  const buf = await readFile(path);
  if (buf.byteLength !== count * 4) throw new BenchPeerError('INVALID_ARGUMENT', `${path}: expected ${count} float32 values (${count * 4} bytes), got ${buf.byteLength} bytes`, { file: path });
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

function scaleRange(list: readonly Float32Array[]): string {
  let lo = Infinity;
  let hi = -Infinity;
  for (const a of list) for (const x of a) (lo = Math.min(lo, x)), (hi = Math.max(hi, x));
  return `${lo.toPrecision(3)}..${hi.toPrecision(3)}`;
}

/** Run any job. */
export async function runJob(job: Job): Promise<JobResult> {
  switch (job.kind) {
    case 'speed':
      return runSpeedJob(job);
    case 'quality':
      return runQualityJob(job);
    case 'greedy':
      return runGreedyJob(job);
    default:
      throw new BenchPeerError('INVALID_ARGUMENT', `unknown job kind ${JSON.stringify((job as { kind?: unknown }).kind)}`, { field: 'kind' });
  }
}
