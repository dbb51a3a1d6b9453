// Jobs the parent hands to a measured child process, and what the child hands back (JSON files).

/** Which engine a configuration runs on. */
export type Side = 'kvq' | 'llama.cpp';

/**
 * kvq `kvCacheDtype` values benchmarked (`float32` only as the quality reference): the FP8 per-tensor ones and the
 * write-time-scaled ones (docs/spec/kv-dtypes.md).
 */
export type KvqKv = (typeof KVQ_KV_TYPES)[number];

/** Every {@link KvqKv}. */
export const KVQ_KV_TYPES = [
  'auto',
  'float32',
  'fp8_e4m3',
  'fp8_e5m2',
  'fp8_per_token_head',
  'int8_per_token_head',
  'int4_per_token_head',
  'int4_g16',
  'int4_g32',
  'int4_g64',
  'nvfp4',
  'q4_0',
  'int4_g32_f16',
] as const;
/** llama.cpp KV cache types benchmarked (`f32` only as the quality reference and for greedy parity). */
export type PeerKv = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';

/** One measured configuration: an engine, its KV cache type and (llama.cpp) flash attention on or off. */
export interface Configuration {
  readonly side: Side;
  readonly kv: KvqKv | PeerKv;
  /** llama.cpp only. */
  readonly flashAttention?: boolean;
  /** kvq only: FP8 scales from `@kvq/calibrate` (dataset, per KV head) instead of 1.0. */
  readonly calibrated?: boolean;
}

/** A short unique name of a configuration (`kvq fp8_e4m3`, `llama.cpp q8_0 fa`). */
export function configLabel(c: Configuration): string {
  if (c.side === 'kvq') return `kvq ${c.kv}${c.calibrated ? ' (per-head calibrated)' : ''}`;
  return `llama.cpp ${c.kv}${c.flashAttention ? ' fa' : ''}`;
}

/** Model dimensions the KV-bytes formula needs. */
export interface ModelDims {
  readonly numLayers: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly vocabSize: number;
}

/** Decode speed measurement after a prompt of `context` tokens. */
export interface SpeedJob {
  readonly kind: 'speed';
  readonly config: Configuration;
  readonly modelPath: string;
  readonly dims: ModelDims;
  /** Threads of the engine (kvq: `KVQ_CPU_THREADS`; llama.cpp: context threads). */
  readonly threads: number;
  /** Prompt lengths; decode speed is measured after each (the first is the prompt-processing / TTFT prompt). */
  readonly contexts: readonly number[];
  /** Tokens generated after each prompt; decode speed is over tokens 2..n. */
  readonly decodeTokens: number;
  /** Prompt token ids are drawn (seeded) from [lo, hi). */
  readonly tokenRange: readonly [number, number];
  readonly seed: number;
  /** Folder holding the installed node-llama-cpp (llama.cpp side). */
  readonly peerDir: string;
}

/** Measurements at one context length. */
export interface ContextSpeed {
  readonly context: number;
  /** Time from submitting the prompt to the first generated token (prefill + first sample), ms. */
  readonly prefillMs: number;
  readonly prefillTokensPerSecond: number;
  /** (decodeTokens - 1) / time from the first to the last generated token. */
  readonly decodeTokensPerSecond: number;
}

/** Result of a {@link SpeedJob}. */
export interface SpeedResult {
  readonly kind: 'speed';
  readonly label: string;
  readonly config: Configuration;
  readonly loadMs: number;
  readonly contexts: readonly ContextSpeed[];
  /** Peak resident set size of the child process, bytes (`process.resourceUsage().maxRSS`). */
  readonly peakRssBytes: number;
  /** K + V bytes stored per token over all layers. */
  readonly kvBytesPerToken: number;
  /** Engine facts (backend, ISA, threads, llama.cpp release). */
  readonly engine: Readonly<Record<string, string | number | boolean>>;
  /** Scheduling policy the child ran under, as `chrt -p` reports it (or `not available`). */
  readonly scheduling: string;
}

/** Quality over documents: each configuration's next-token distributions against the first one's. */
export interface QualityJob {
  readonly kind: 'quality';
  readonly side: Side;
  readonly modelPath: string;
  readonly dims: ModelDims;
  readonly threads: number;
  /** Token ids of each document (BOS included); every position but the last is scored. */
  readonly documents: readonly (readonly number[])[];
  /** The first is the reference (KL 0 by definition). */
  readonly configs: readonly Configuration[];
  /** Texts for `@kvq/calibrate`'s dataset calibration (kvq configs with `calibrated`). */
  readonly calibrationTexts: readonly string[];
  /** Write the reference's log-probabilities here (float32, positions x vocab) for the cross-engine check. */
  readonly referenceDump: string;
  /**
   * Cross-engine mode: the reference is this file (the other engine's dump: float32 log-probabilities, positions x
   * vocab, in document order) instead of the first configuration, so every row is KL(that engine || this one).
   */
  readonly externalReference?: string;
  readonly peerDir: string;
}

/** One row of a quality table. */
export interface QualityRow {
  readonly label: string;
  readonly config: Configuration;
  /** Scored positions. */
  readonly tokens: number;
  readonly nllMean: number;
  readonly perplexity: number;
  /** Mean KL(reference || this) in nats. */
  readonly klMean: number;
  /** Fraction of positions whose argmax equals the reference's. */
  readonly top1Agreement: number;
  readonly kvBytesPerToken: number;
  /** The KV storage dtype the engine actually used (kvq: `auto` resolved), when known. */
  readonly kvDtype?: string;
  /** Largest reference top-1/top-2 gap (nats) among the positions where the top-1 tokens disagree (cross-engine rows). */
  readonly maxDisagreementGap?: number;
}

/** Result of a {@link QualityJob}. */
export interface QualityResult {
  readonly kind: 'quality';
  readonly side: Side;
  readonly reference: string;
  readonly rows: readonly QualityRow[];
  /** Calibrated per-head scales used (kvq), or why they are absent. */
  readonly calibration: string;
  readonly positions: number;
}

/** Greedy generation from a prompt. */
export interface GreedyJob {
  readonly kind: 'greedy';
  readonly config: Configuration;
  readonly modelPath: string;
  readonly dims: ModelDims;
  readonly promptTokens: readonly number[];
  readonly maxTokens: number;
  readonly threads: number;
  readonly peerDir: string;
}

/** Result of a {@link GreedyJob}. */
export interface GreedyResult {
  readonly kind: 'greedy';
  readonly label: string;
  readonly tokens: readonly number[];
  readonly text: string;
}

/** Any job. */
export type Job = SpeedJob | QualityJob | GreedyJob;
/** Any result. */
export type JobResult = SpeedResult | QualityResult | GreedyResult;

/** Bytes per element of each KV cache type (q8_0: 34-byte blocks of 32; q4_0: 18-byte blocks of 32). */
export const KV_ELEMENT_BYTES: Record<string, number> = {
  f32: 4,
  float32: 4,
  f16: 2,
  bf16: 2,
  q8_0: 34 / 32,
  q4_0: 18 / 32,
  fp8_e4m3: 1,
  fp8_e5m2: 1,
};

/** K + V bytes per token over all layers for a KV element size. */
export function kvBytesPerToken(dims: ModelDims, elementBytes: number): number {
  return 2 * dims.numLayers * dims.numKvHeads * dims.headDim * elementBytes;
}

/** Seeded prompt token ids in [lo, hi) (mulberry32), the same on both sides for the same seed. */
export function promptTokens(length: number, range: readonly [number, number], seed: number): number[] {
  let a = seed >>> 0;
  const [lo, hi] = range;
  return Array.from({ length }, () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return lo + Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * (hi - lo));
  });
}
