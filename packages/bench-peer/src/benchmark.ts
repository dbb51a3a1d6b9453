import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem, tmpdir, type as osType, release as osRelease } from 'node:os';
import { join } from 'node:path';

import { loadModel } from '@kvq/engine';
import { fixturePath } from '@kvq/fixtures';
import { modelTinyPath } from '@kvq/model-tiny';

import { BenchPeerError, checkChoice, checkInt } from './errors.js';
import { prepareQualityModel, prepareSpeedModel, SPEED_MODELS, type PreparedModel, type SpeedModelName } from './models.js';
import { CROSS_ENGINE_SCHEMES, crossEngineTargets, runCrossEngineQuantized, type CrossEngineModelResult, type CrossEngineScheme } from './quantized.js';
import { defaultPeerDir, installPeer, isPeerInstalled, PEER_VERSION } from './peer/install.js';
import { peerKvUnsupported } from './peer/runner.js';
import { median, QualityAccumulator } from './metrics.js';
import { configLabel, KVQ_KV_TYPES, type Configuration, type GreedyResult, type Job, type JobResult, type KvqKv, type PeerKv, type QualityResult, type SpeedResult } from './protocol.js';
import { findRepoRoot } from './repo.js';
import { resolveRealtime, runChild, type Realtime } from './spawn.js';

/** Options of {@link runPeerBenchmark}; every field is optional. */
export interface PeerBenchmarkOptions {
  /** Speed models. Default `stories260K`, `llama-768x12-f32`, `llama-768x12-f16` (add `tinyllama-1.1b-f16`, or set `tinyllama`). */
  readonly models?: readonly SpeedModelName[];
  /** Add the TinyLlama-1.1B shape (2.2 GB F16; slow: about 10x the 768-wide model per configuration). Default false. */
  readonly tinyllama?: boolean;
  /** Context lengths (tokens of prompt before decoding). Default [512, 2048, 8192]; the first also gives prompt processing and TTFT. */
  readonly contexts?: readonly number[];
  /** Tokens decoded after each prompt. Default 64. */
  readonly decodeTokens?: number;
  /** Measured runs of every configuration (alternating engines, order reversed on odd rounds); medians are reported. Default 3. */
  readonly repeats?: number;
  /** Threads of each engine. Default 2. */
  readonly threads?: number;
  /** Real-time scheduling of the measured children: `auto` (use `chrt -r 1` when possible), `chrt` (require it), `off`. Default `auto`. */
  readonly realtime?: Realtime;
  /** Run the speed comparison. Default true. */
  readonly speed?: boolean;
  /** Run the quality comparison (kvq-tiny) and greedy parity (stories260K). Default true. */
  readonly quality?: boolean;
  /** Scored positions of the quality comparison (documents are taken in order until reached). Default 8192. */
  readonly maxEvalTokens?: number;
  /** Greedy tokens compared on stories260K. Default 128. */
  readonly greedyTokens?: number;
  /** Folder of the node-llama-cpp install. Default {@link defaultPeerDir}. */
  readonly peerDir?: string;
  /** Install node-llama-cpp when missing (npm, network). Default true. */
  readonly installPeer?: boolean;
  /** Where the generated GGUF models are kept between runs. Default `<tmpdir>/kvq-bench-peer`. */
  readonly workDir?: string;
  /** Where docs/benchmarks.md and its JSON and SVG are written. Default `<repo>/docs` (or `./docs` outside a checkout); `null` writes nothing. */
  readonly outDir?: string | null;
  /** Kill a child after this long, ms. Default 30 minutes. */
  readonly childTimeoutMs?: number;
  /** Progress lines. Default: none. */
  readonly log?: (line: string) => void;
  /** kvq KV types of the speed comparison. Default `auto`, `fp8_e4m3`, `fp8_e5m2`. */
  readonly kvqKv?: readonly KvqKv[];
  /** llama.cpp KV types of the speed comparison (each with flash attention off and on where llama.cpp allows). Default `f16`, `bf16`, `q8_0`, `q4_0`. */
  readonly peerKv?: readonly PeerKv[];
  /**
   * Run the cross-engine comparison of quantized weights: the same GGUF file of each of these schemes (kvq-tiny and
   * the random 768x12 shape) scored by llama.cpp and by kvq; `f32` adds the dense control. Default none.
   */
  readonly crossEngine?: readonly CrossEngineScheme[];
  /** Scored positions per file of the cross-engine comparison. Default 2048. */
  readonly crossEnginePositions?: number;
}

/** Medians of one configuration over the repeats. */
export interface SpeedSummary {
  readonly label: string;
  readonly config: Configuration;
  readonly runs: number;
  readonly ttftMs: number;
  readonly promptTokensPerSecond: number;
  /** By context length. */
  readonly decodeTokensPerSecond: Readonly<Record<number, number>>;
  readonly prefillMs: Readonly<Record<number, number>>;
  readonly peakRssBytes: number;
  readonly kvBytesPerToken: number;
  readonly loadMs: number;
  readonly scheduling: string;
  readonly engine: Readonly<Record<string, string | number | boolean>>;
}

/** A pass/fail target with its measured ratio. */
export interface TargetResult {
  readonly target: string;
  readonly model: string;
  readonly measured: string;
  readonly met: boolean;
}

/** The speed results of one model. */
export interface ModelSpeedReport {
  readonly model: Omit<PreparedModel, 'path'>;
  readonly contexts: readonly number[];
  readonly summaries: readonly SpeedSummary[];
  readonly skipped: readonly { label: string; reason: string }[];
  readonly runs: readonly SpeedResult[];
}

/** Everything one run measured (also written as docs/benchmarks/peer-results.json). */
export interface PeerBenchmarkReport {
  readonly date: string;
  readonly machine: Readonly<Record<string, string | number>>;
  readonly versions: Readonly<Record<string, string>>;
  readonly settings: Readonly<Record<string, string | number | boolean | readonly number[]>>;
  readonly speed: readonly ModelSpeedReport[];
  readonly quality: { readonly model: Omit<PreparedModel, 'path'>; readonly kvq: QualityResult; readonly llamaCpp: QualityResult; readonly crossEngine: { klMean: number; top1Agreement: number; positions: number }; readonly documents: number; readonly calibrationDocuments: number } | undefined;
  readonly greedy: { readonly kvq: GreedyResult; readonly llamaCpp: GreedyResult; readonly identicalPrefix: number; readonly compared: number } | undefined;
  readonly targets: readonly TargetResult[];
  /** The cross-engine comparison of quantized GGUF files (absent when not run). */
  readonly crossEngine?: readonly CrossEngineModelResult[];
  /** Why the quality or greedy comparison is missing, when a child failed. */
  readonly failures?: readonly string[];
  /** Where the report files went (absent when `outDir` is null). */
  readonly files: readonly string[];
}


/** Interleave ours and theirs (ours[0], theirs[0], ours[1], ...), so neither engine runs in a block. */
export function alternate<T>(a: readonly T[], b: readonly T[]): T[] {
  const out: T[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (i < a.length) out.push(a[i]!);
    if (i < b.length) out.push(b[i]!);
  }
  return out;
}

/** Medians of a configuration's runs. */
export function summarize(runs: readonly SpeedResult[]): SpeedSummary {
  const first = runs[0]!;
  const contexts = first.contexts.map((c) => c.context);
  const at = (ctx: number, f: (c: SpeedResult['contexts'][number]) => number) => median(runs.map((r) => f(r.contexts.find((c) => c.context === ctx)!)));
  return {
    label: first.label,
    config: first.config,
    runs: runs.length,
    ttftMs: at(contexts[0]!, (c) => c.prefillMs),
    promptTokensPerSecond: at(contexts[0]!, (c) => c.prefillTokensPerSecond),
    decodeTokensPerSecond: Object.fromEntries(contexts.map((ctx) => [ctx, at(ctx, (c) => c.decodeTokensPerSecond)])),
    prefillMs: Object.fromEntries(contexts.map((ctx) => [ctx, at(ctx, (c) => c.prefillMs)])),
    peakRssBytes: median(runs.map((r) => r.peakRssBytes)),
    kvBytesPerToken: first.kvBytesPerToken,
    loadMs: median(runs.map((r) => r.loadMs)),
    scheduling: [...new Set(runs.map((r) => r.scheduling))].join(', '),
    engine: first.engine,
  };
}

/** The llama.cpp summary with the highest value of `metric` among those matching `filter`. */
export function bestPeer(summaries: readonly SpeedSummary[], metric: (s: SpeedSummary) => number, filter: (c: Configuration) => boolean = () => true): SpeedSummary | undefined {
  let best: SpeedSummary | undefined;
  for (const s of summaries) if (s.config.side === 'llama.cpp' && filter(s.config) && Number.isFinite(metric(s)) && (!best || metric(s) > metric(best))) best = s;
  return best;
}

/** Decode and prompt-processing targets of the issue, per model, from the medians. */
export function speedTargets(report: ModelSpeedReport): TargetResult[] {
  const out: TargetResult[] = [];
  const s = report.summaries;
  const fp8 = s.filter((x) => x.config.side === 'kvq' && (x.config.kv === 'fp8_e4m3' || x.config.kv === 'fp8_e5m2'));
  const name = report.model.name;
  const fmt = (x: number) => `${x.toFixed(2)}x`;
  for (const ctx of report.contexts) {
    const dec = (x: SpeedSummary) => x.decodeTokensPerSecond[ctx] ?? Number.NaN;
    const f16 = bestPeer(s, dec, (c) => c.kv === 'f16');
    const q8 = bestPeer(s, dec, (c) => c.kv === 'q8_0');
    for (const ours of fp8) {
      if (f16 && ctx >= 2048) {
        const r = dec(ours) / dec(f16);
        out.push({ target: `decode @${ctx}: ${ours.label} >= 1.0x ${f16.label} (llama.cpp's faster f16)`, model: name, measured: fmt(r), met: r >= 1 });
      }
      if (q8) {
        const r = dec(ours) / dec(q8);
        out.push({ target: `decode @${ctx}: ${ours.label} >= 1.0x ${q8.label}`, model: name, measured: fmt(r), met: r >= 1 });
      }
    }
  }
  const pp = (x: SpeedSummary) => x.promptTokensPerSecond;
  const f16pp = bestPeer(s, pp, (c) => c.kv === 'f16');
  if (f16pp) {
    for (const ours of s.filter((x) => x.config.side === 'kvq')) {
      const r = pp(ours) / pp(f16pp);
      out.push({ target: `prompt processing (${report.contexts[0]} tokens): ${ours.label} >= 0.8x ${f16pp.label}`, model: name, measured: fmt(r), met: r >= 0.8 });
    }
  }
  return out;
}

function machineInfo(): Record<string, string | number> {
  const c = cpus();
  let flags = '';
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const f = /^flags\s*:\s*(.*)$/m.exec(info)?.[1] ?? '';
    flags = ['avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_bf16', 'avx512vnni', 'avx512_vnni', 'avx512vbmi', 'amx_int8'].filter((x) => f.split(' ').includes(x)).join(' ');
    const family = /^cpu family\s*:\s*(\d+)/m.exec(info)?.[1];
    if (family) flags = `family ${family}; ${flags}`;
  } catch {
    // not Linux
  }
  return {
    cpu: c[0]?.model ?? 'unknown',
    logicalCpus: c.length,
    cpuFeatures: flags,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `${osType()} ${osRelease()}`,
    node: process.version,
    loadAverageAtStart: loadavg().map((x) => x.toFixed(2)).join(' '),
  };
}

/** `git describe`-style commit of the checkout, with `+changes` when the work tree differs from it. */
function gitCommit(): string {
  const root = findRepoRoot();
  if (!root) return 'unknown';
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
  if (head.status !== 0) return 'unknown';
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8' });
  return `${head.stdout.trim()}${dirty.stdout.trim() ? ' + uncommitted changes' : ''}`;
}

function packageVersion(path: string): string {
  try {
    return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** The first line of a child failure plus its first error line, at most 240 characters. */
export function shortReason(message: string): string {
  const lines = message.split('\n').map((l) => l.trim()).filter(Boolean);
  const error = lines.slice(1).find((l) => /error/i.test(l));
  return [lines[0], error].filter(Boolean).join(': ').slice(0, 240);
}

/** Split text into documents at blank lines (as `@kvq/engine`'s quality report does). */
export function splitDocuments(text: string): string[] {
  return text
    .split(/\r?\n\s*\r?\n/)
    .map((d) => d.trim())
    .filter((d) => d.length > 0);
}

/**
 * Run the side-by-side benchmark against llama.cpp (node-llama-cpp 3.21.1): speed on identical GGUF models
 * (each configuration in its own child process, `repeats` alternating rounds, medians), quality on kvq-tiny
 * (NLL, KL and top-1 agreement of every KV type against the same engine's f32 KV), greedy parity on stories260K;
 * then write docs/benchmarks.md, docs/benchmarks/peer-results.json and docs/benchmarks/decode-vs-context.svg.
 * Installs node-llama-cpp into {@link defaultPeerDir} first when needed (never into the workspace).
 * Measured runs need the built package (`dist/run.js`).
 * @example
 * import { runPeerBenchmark } from '@kvq/bench-peer';
 * const report = await runPeerBenchmark({ repeats: 3, log: console.log });
 * @throws BenchPeerError `INVALID_ARGUMENT`, `PEER_NOT_INSTALLED`, `PEER_INSTALL_FAILED`, `NOT_BUILT`, `CHILD_FAILED`, `IO_ERROR`
 */
export async function runPeerBenchmark(options: PeerBenchmarkOptions = {}): Promise<PeerBenchmarkReport> {
  const log = options.log ?? (() => undefined);
  const repeats = checkInt('repeats', options.repeats ?? 3, 1, 50);
  const threads = checkInt('threads', options.threads ?? 2, 1, 256);
  const decodeTokens = checkInt('decodeTokens', options.decodeTokens ?? 64, 2, 4096);
  const contexts = [...(options.contexts ?? [512, 2048, 8192])];
  if (contexts.length === 0) throw new BenchPeerError('INVALID_ARGUMENT', 'contexts must list at least one context length', { field: 'contexts' });
  contexts.forEach((c, i) => checkInt(`contexts[${i}]`, c, 1, 1 << 17));
  const maxEvalTokens = checkInt('maxEvalTokens', options.maxEvalTokens ?? 8192, 16);
  const greedyTokens = checkInt('greedyTokens', options.greedyTokens ?? 128, 1, 4096);
  const childTimeoutMs = checkInt('childTimeoutMs', options.childTimeoutMs ?? 30 * 60_000, 1000);
  const realtimeMode = checkChoice('realtime', options.realtime ?? 'auto', ['auto', 'chrt', 'off'] as const);
  const models = [...(options.models ?? ['stories260K', 'llama-768x12-f32', 'llama-768x12-f16'])];
  if (options.tinyllama && !models.includes('tinyllama-1.1b-f16')) models.push('tinyllama-1.1b-f16');
  models.forEach((m, i) => checkChoice(`models[${i}]`, m, SPEED_MODELS));
  const kvqKv = [...(options.kvqKv ?? ['auto', 'fp8_e4m3', 'fp8_e5m2'])];
  kvqKv.forEach((k, i) => checkChoice(`kvqKv[${i}]`, k, KVQ_KV_TYPES));
  const peerKv = [...(options.peerKv ?? ['f16', 'bf16', 'q8_0', 'q4_0'])];
  peerKv.forEach((k, i) => checkChoice(`peerKv[${i}]`, k, ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const));
  const crossSchemes = [...(options.crossEngine ?? [])];
  crossSchemes.forEach((q, i) => checkChoice(`crossEngine[${i}]`, q, CROSS_ENGINE_SCHEMES));
  const crossPositions = checkInt('crossEnginePositions', options.crossEnginePositions ?? 2048, 16);
  const ourSpeed: Configuration[] = kvqKv.map((kv) => ({ side: 'kvq', kv }));
  const theirSpeed: Configuration[] = peerKv.flatMap((kv) => [false, true].map((fa) => ({ side: 'llama.cpp' as const, kv, flashAttention: fa })));
  const doSpeed = options.speed ?? true;
  const doQuality = options.quality ?? true;

  const peerDir = options.peerDir ?? defaultPeerDir();
  if (!isPeerInstalled(peerDir)) {
    if (options.installPeer === false) {
      throw new BenchPeerError('PEER_NOT_INSTALLED', `node-llama-cpp@${PEER_VERSION} is not installed in ${peerDir} and installPeer is false`, { file: peerDir });
    }
    log(`installing node-llama-cpp@${PEER_VERSION} into ${peerDir} (npm, prebuilt CPU binary, no install scripts)`);
    await installPeer({ dir: peerDir, log: (l) => log(`  npm: ${l}`) });
  }
  const realtime = resolveRealtime(realtimeMode);
  const scheduling = realtime ? '`chrt -r 1` (SCHED_RR, priority 1)' : 'default scheduling (no real-time priority; the machine should be idle)';
  log(`measured children: ${scheduling} for both engines, ${threads} threads each`);
  if (!realtime) log('warning: without real-time scheduling llama.cpp decode collapses when anything else runs on the CPUs; use an idle machine');

  const workDir = options.workDir ?? join(tmpdir(), 'kvq-bench-peer');
  await mkdir(workDir, { recursive: true });
  const runDir = await mkdtemp(join(workDir, 'run-'));
  const machine = machineInfo();
  const versions: Record<string, string> = {
    'node-llama-cpp': PEER_VERSION,
    '@kvq/engine': packageVersion(join(findRepoRoot() ?? '.', 'packages', 'engine', 'package.json')),
    'kvq commit': gitCommit(),
  };
  const settings = { threads, repeats, contexts, decodeTokens, scheduling, maxEvalTokens, greedyTokens, prefillChunk: 512, ...(crossSchemes.length ? { crossEnginePositions: crossPositions } : {}) };
  const speed: ModelSpeedReport[] = [];
  const targets: TargetResult[] = [];
  const child = <R extends JobResult>(job: Job, name: string) =>
    runChild<R>(job, { dir: runDir, realtime, threads, timeoutMs: childTimeoutMs, name, log });

  try {
    if (doSpeed) {
      for (const name of models) {
        log(`preparing ${name}`);
        const model = await prepareSpeedModel(name, workDir);
        const theirs = theirSpeed.filter((c) => !peerKvUnsupported(c.kv as PeerKv, c.flashAttention ?? false, model.dims.headDim));
        const skipped = theirSpeed.filter((c) => !theirs.includes(c)).map((c) => ({ label: configLabel(c), reason: peerKvUnsupported(c.kv as PeerKv, c.flashAttention ?? false, model.dims.headDim)! }));
        const order = alternate(ourSpeed, theirs);
        const runs: SpeedResult[] = [];
        const failed = new Map<string, string>();
        for (let r = 0; r < repeats; r++) {
          const round = r % 2 === 0 ? order : [...order].reverse();
          for (const [i, config] of round.entries()) {
            const label = configLabel(config);
            let res: SpeedResult;
            try {
              res = await child<SpeedResult>(
                { kind: 'speed', config, modelPath: model.path, dims: model.dims, threads, contexts, decodeTokens, tokenRange: model.tokenRange, seed: 1234, peerDir },
                `${name}-${label.replace(/[^a-z0-9_.-]+/gi, '_')}-r${r}`,
              );
            } catch (e) {
              // One configuration failing (a crash, a timeout) must not lose the other measurements: report it.
              if (!(e instanceof BenchPeerError) || e.code !== 'CHILD_FAILED') throw e;
              const reason = shortReason(e.message);
              failed.set(label, `${failed.has(label) ? `${failed.get(label)}; ` : ''}round ${r + 1}: ${reason}`);
              log(`[${name}] ${label} FAILED in round ${r + 1}: ${reason}`);
              continue;
            }
            runs.push(res);
            const dec = res.contexts.map((c) => `${c.context}: ${c.decodeTokensPerSecond.toFixed(1)}`).join(', ');
            log(`[${name} round ${r + 1}/${repeats}, ${i + 1}/${round.length}] ${label}: pp ${res.contexts[0]!.prefillTokensPerSecond.toFixed(0)} tok/s, decode ${dec} tok/s, rss ${(res.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
            if (res.engine.llamaCppRelease) versions['llama.cpp (prebuilt in node-llama-cpp)'] = String(res.engine.llamaCppRelease);
            if (res.engine.isa) versions['kvq CPU kernels'] = `${res.engine.backend} (${res.engine.isa})`;
          }
        }
        const labels = [...new Set(runs.map((x) => x.label))];
        const summaries = labels.map((l) => summarize(runs.filter((x) => x.label === l)));
        const report: ModelSpeedReport = { model: strip(model), contexts, summaries, skipped: [...skipped, ...[...failed].map(([label, reason]) => ({ label, reason: `failed: ${reason}` }))], runs };
        speed.push(report);
        if (name !== 'stories260K') targets.push(...speedTargets(report));
        // Kept for recovery (`--render <workDir>/partial-report.json,...`): a killed run keeps its finished models.
        const partial: PeerBenchmarkReport = { date: new Date().toISOString(), machine, versions, settings, speed, quality: undefined, greedy: undefined, targets, files: [] };
        await writeFile(join(workDir, 'partial-report.json'), JSON.stringify(partial, null, 2));
      }
    }

    let quality: PeerBenchmarkReport['quality'];
    let greedy: PeerBenchmarkReport['greedy'];
    const failures: string[] = [];
    const ctx: RunContext = { workDir, runDir, threads, peerDir, maxEvalTokens, greedyTokens, log, child };
    if (doQuality) {
      // A failed child here (crash, timeout) is reported, not thrown: the speed results above must survive.
      try {
        const q = await runQualityComparison(ctx);
        quality = q.quality;
        targets.push(...q.targets);
      } catch (e) {
        if (!(e instanceof BenchPeerError) || e.code !== 'CHILD_FAILED') throw e;
        failures.push(`quality: ${shortReason(e.message)}`);
        log(`quality FAILED: ${e.message}`);
      }
      try {
        const g = await runGreedyParity(ctx);
        greedy = g.greedy;
        targets.push(g.target);
      } catch (e) {
        if (!(e instanceof BenchPeerError) || e.code !== 'CHILD_FAILED') throw e;
        failures.push(`greedy: ${shortReason(e.message)}`);
        log(`greedy FAILED: ${e.message}`);
      }
    }
    let crossEngine: CrossEngineModelResult[] | undefined;
    if (crossSchemes.length > 0) {
      try {
        const tok = (await loadModel(modelTinyPath)).tokenizer;
        const tinyDocs = qualityDocuments((t) => tok.encode(t), 512, crossPositions).documents;
        crossEngine = await runCrossEngineQuantized({ workDir, runDir, threads, peerDir, positions: crossPositions, log, child }, crossSchemes, tinyDocs);
        targets.push(...crossEngineTargets(crossEngine));
      } catch (e) {
        if (!(e instanceof BenchPeerError) || e.code !== 'CHILD_FAILED') throw e;
        failures.push(`cross-engine: ${shortReason(e.message)}`);
        log(`cross-engine FAILED: ${e.message}`);
      }
    }

    machine.loadAverageAtEnd = loadavg().map((x) => x.toFixed(2)).join(' ');
    const report: PeerBenchmarkReport = {
      date: new Date().toISOString(),
      machine,
      versions,
      settings,
      speed,
      quality,
      greedy,
      targets,
      ...(crossEngine ? { crossEngine } : {}),
      ...(failures.length ? { failures } : {}),
      files: [],
    };
    if (options.outDir === null) return report;
    const { writeReport } = await import('./report/write.js');
    const outDir = options.outDir ?? join(findRepoRoot() ?? process.cwd(), 'docs');
    const files = await writeReport(report, outDir);
    for (const f of files) log(`wrote ${f}`);
    return { ...report, files };
  } finally {
    await rm(runDir, { recursive: true, force: true });
  }
}

/**
 * kvq-tiny's evaluation documents (`@kvq/fixtures` eval/kjv-fortunes-public.txt split at blank lines): every fourth
 * is kept for calibration, the others are encoded (at most `limit` tokens each) until `maxPositions` positions are
 * scored.
 */
export function qualityDocuments(encode: (text: string) => number[], limit: number, maxPositions: number): { documents: number[][]; calibrationTexts: string[] } {
  const docs = splitDocuments(readFileSync(fixturePath('eval/kjv-fortunes-public.txt'), 'utf8'));
  const calibrationTexts = docs.filter((_, i) => i % 4 === 0);
  const documents: number[][] = [];
  let budget = maxPositions;
  for (const [i, d] of docs.entries()) {
    if (i % 4 === 0 || budget <= 0) continue;
    const ids = encode(d).slice(0, Math.min(limit, budget + 1));
    if (ids.length < 2) continue;
    documents.push(ids);
    budget -= ids.length - 1;
  }
  return { documents, calibrationTexts };
}

/** What the quality and greedy steps need from the run. */
interface RunContext {
  readonly workDir: string;
  readonly runDir: string;
  readonly threads: number;
  readonly peerDir: string;
  readonly maxEvalTokens: number;
  readonly greedyTokens: number;
  readonly log: (line: string) => void;
  readonly child: <R extends JobResult>(job: Job, name: string) => Promise<R>;
}

const strip = ({ path: _p, ...m }: PreparedModel): Omit<PreparedModel, 'path'> => m;

/**
 * Quality on kvq-tiny (GGUF BF16): every fourth eval document calibrates kvq's per-head scales, the others are
 * scored by each engine's KV types against the same engine's f32 run; plus the cross-engine check.
 */
async function runQualityComparison(ctx: RunContext): Promise<{ quality: NonNullable<PeerBenchmarkReport['quality']>; targets: TargetResult[] }> {
  const { workDir, runDir, threads, peerDir, maxEvalTokens, log, child } = ctx;
  const out: TargetResult[] = [];
  log('quality: preparing kvq-tiny as GGUF BF16');
  const model = await prepareQualityModel(workDir);
  const tok = (await loadModel(modelTinyPath)).tokenizer;
  const { documents, calibrationTexts } = qualityDocuments((t) => tok.encode(t), model.dims.contextLength, maxEvalTokens);
  const base = { kind: 'quality' as const, modelPath: model.path, dims: model.dims, threads, documents, calibrationTexts, peerDir };
  log(`quality: kvq on ${documents.length} documents`);
  const kvq = await child<QualityResult>(
    {
      ...base,
      side: 'kvq',
      configs: [
        { side: 'kvq', kv: 'float32' },
        { side: 'kvq', kv: 'auto' },
        { side: 'kvq', kv: 'fp8_e4m3' },
        { side: 'kvq', kv: 'fp8_e4m3', calibrated: true },
        { side: 'kvq', kv: 'fp8_e5m2' },
      ],
      referenceDump: join(runDir, 'kvq-reference.f32'),
    },
    'quality-kvq',
  );
  log('quality: llama.cpp');
  // Reference: f32 KV with flash attention OFF. (llama.cpp's CPU flash attention computes in f16: with it on, an
  // f32 cache gives exactly the f16 cache's distributions, so it is no unquantized reference.)
  const llamaConfigs: Configuration[] = [{ side: 'llama.cpp', kv: 'f32', flashAttention: false }];
  for (const kv of ['f16', 'bf16', 'q8_0', 'q4_0'] as PeerKv[]) {
    for (const fa of [false, true]) if (!peerKvUnsupported(kv, fa, model.dims.headDim)) llamaConfigs.push({ side: 'llama.cpp', kv, flashAttention: fa });
  }
  const llamaCpp = await child<QualityResult>(
    {
      ...base,
      side: 'llama.cpp',
      configs: llamaConfigs,
      referenceDump: join(runDir, 'llama-reference.f32'),
    },
    'quality-llama',
  );
  const crossEngine = await compareDumps(join(runDir, 'kvq-reference.f32'), join(runDir, 'llama-reference.f32'), documents, model.dims.vocabSize);
  const quality = { model: strip(model), kvq, llamaCpp, crossEngine, documents: documents.length, calibrationDocuments: calibrationTexts.length };
  const q8 = llamaCpp.rows.find((r) => r.config.kv === 'q8_0');
  const cal = kvq.rows.find((r) => r.config.calibrated);
  if (q8 && cal) {
    const r = cal.klMean / q8.klMean;
    out.push({
      target: `KL: ${cal.label} <= 2x llama.cpp q8_0's, at ${((1 - cal.kvBytesPerToken / q8.kvBytesPerToken) * 100).toFixed(1)}% fewer KV bytes`,
      model: model.name,
      measured: `${r.toFixed(2)}x (${cal.klMean.toExponential(2)} vs ${q8.klMean.toExponential(2)} nats)`,
      met: r <= 2,
    });
  }
  return { quality, targets: out };
}

/** Greedy tokens from BOS on stories260K: kvq `auto` against llama.cpp f32 KV (flash attention off). */
async function runGreedyParity(ctx: RunContext): Promise<{ greedy: NonNullable<PeerBenchmarkReport['greedy']>; target: TargetResult }> {
  const { workDir, threads, peerDir, greedyTokens, log, child } = ctx;
  log('greedy parity on stories260K');
  const stories = await prepareSpeedModel('stories260K', workDir);
  const g = { kind: 'greedy' as const, modelPath: stories.path, dims: stories.dims, promptTokens: [1], maxTokens: greedyTokens, threads, peerDir };
  const ours = await child<GreedyResult>({ ...g, config: { side: 'kvq', kv: 'auto' } }, 'greedy-kvq');
  const theirs = await child<GreedyResult>({ ...g, config: { side: 'llama.cpp', kv: 'f32', flashAttention: false } }, 'greedy-llama');
  let same = 0;
  while (same < greedyTokens && ours.tokens[same] === theirs.tokens[same]) same++;
  const greedy = { kvq: ours, llamaCpp: theirs, identicalPrefix: same, compared: greedyTokens };
  const target: TargetResult = { target: `greedy tokens on stories260K: kvq auto == llama.cpp f32 for the first ${Math.min(128, greedyTokens)}`, model: 'stories260K', measured: `${same} of ${greedyTokens} identical`, met: same >= Math.min(128, greedyTokens) };
  return { greedy, target };
}

/** KL(kvq f32 || llama.cpp f32) and top-1 agreement from the two reference dumps: are the two models the same? */
async function compareDumps(a: string, b: string, documents: readonly (readonly number[])[], vocab: number): Promise<{ klMean: number; top1Agreement: number; positions: number }> {
  const read = async (p: string) => {
    const buf = await readFile(p);
    return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  };
  const [x, y] = await Promise.all([read(a), read(b)]);
  const acc = new QualityAccumulator();
  let at = 0;
  for (const d of documents) {
    for (let pos = 0; pos < d.length - 1; pos++, at += vocab) acc.add(x.subarray(at, at + vocab), y.subarray(at, at + vocab), d[pos + 1]!, vocab);
  }
  const r = acc.result();
  return { klMean: r.klMean, top1Agreement: r.top1Agreement, positions: r.tokens };
}
