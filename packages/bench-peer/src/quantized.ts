// Cross-engine quality of quantized GGUF weights: the same file run by llama.cpp and by kvq, position by position.
import { join } from 'node:path';

import type { PreparedModel, QuantScheme } from './models.js';
import { prepareQuantizedTinyModel, prepareRandomModel, prepareTinyF32Model } from './models.js';
import { promptTokens, type Configuration, type Job, type JobResult, type QualityResult, type QualityRow } from './protocol.js';
import { SYNTHETIC_VOCAB } from './gguf/llama.js';

/** kvq KV configurations compared against llama.cpp's f32 KV: `auto` (the weights alone), `float32`, and FP8 e4m3 (scale 1). */
export const CROSS_ENGINE_KVQ: readonly Configuration[] = [
  { side: 'kvq', kv: 'auto' },
  { side: 'kvq', kv: 'float32' },
  { side: 'kvq', kv: 'fp8_e4m3' },
];

/** Targets of issue 14 for the cross-engine comparison of quantized weights. */
export const CROSS_ENGINE_TARGETS = { klMax: 2e-3, top1Min: 0.98 } as const;

/**
 * What a cross-engine file holds: a quantized file type, or `f32`, the dense control (no weight quantization, and
 * llama.cpp's F32 matrix products do not quantize activations), which shows how far the engines agree otherwise.
 */
export type CrossEngineScheme = QuantScheme | 'f32';

/** Every {@link CrossEngineScheme}. */
export const CROSS_ENGINE_SCHEMES: readonly CrossEngineScheme[] = ['q8_0', 'q4_0', 'q4_k_m', 'q5_k_m', 'q6_k', 'f32'];

/** One quantized file, both engines. */
export interface CrossEngineModelResult {
  readonly scheme: CrossEngineScheme;
  readonly model: Omit<PreparedModel, 'path'>;
  /** llama.cpp's own row (f32 KV, flash attention off): its NLL; KL 0 by definition. */
  readonly llamaCpp: QualityRow;
  /** kvq rows: KL(llama.cpp || kvq), top-1 agreement with llama.cpp, kvq's NLL. */
  readonly kvq: readonly QualityRow[];
  readonly positions: number;
  readonly documents: number;
}

/** What the cross-engine step needs from the run. */
export interface CrossEngineContext {
  readonly workDir: string;
  readonly runDir: string;
  readonly threads: number;
  readonly peerDir: string;
  /** Scored positions per model (at least 2048 for the proof). */
  readonly positions: number;
  readonly log: (line: string) => void;
  readonly child: <R extends JobResult>(job: Job, name: string) => Promise<R>;
}

/**
 * Documents of a random-weight model: seeded random token ids of normal pieces after BOS, 256 scored positions each
 * (so node-llama-cpp's per-position probability maps of one document stay a few hundred MB), until `positions`.
 */
export function randomDocuments(model: PreparedModel, positions: number, seed = 99): number[][] {
  const docs: number[][] = [];
  for (let left = positions, i = 0; left > 0; i++) {
    const n = Math.min(256, left);
    docs.push([SYNTHETIC_VOCAB.bos, ...promptTokens(n, model.tokenRange, seed + i)]);
    left -= n;
  }
  return docs;
}

/**
 * For each scheme: kvq-tiny (quantized by `quantizeModel`, documents from `tinyDocuments`) and the random 768x12
 * shape (quantized with the same type mix, {@link randomDocuments}): llama.cpp scores every position with an f32 KV
 * cache (flash attention off) and dumps its log-probabilities; kvq then scores the same file and positions with
 * each of {@link CROSS_ENGINE_KVQ} against that dump.
 */
export async function runCrossEngineQuantized(ctx: CrossEngineContext, schemes: readonly CrossEngineScheme[], tinyDocuments: readonly (readonly number[])[]): Promise<CrossEngineModelResult[]> {
  const out: CrossEngineModelResult[] = [];
  for (const scheme of schemes) {
    for (const which of ['kvq-tiny', 'llama-768x12'] as const) {
      ctx.log(`cross-engine ${scheme}: preparing ${which}`);
      const model =
        which === 'kvq-tiny'
          ? scheme === 'f32'
            ? await prepareTinyF32Model(ctx.workDir)
            : await prepareQuantizedTinyModel(scheme, ctx.workDir)
          : await prepareRandomModel('llama-768x12', scheme, ctx.workDir);
      const documents = which === 'kvq-tiny' ? tinyDocuments : randomDocuments(model, ctx.positions);
      const base = { kind: 'quality' as const, modelPath: model.path, dims: model.dims, threads: ctx.threads, documents, calibrationTexts: [], peerDir: ctx.peerDir };
      const dump = join(ctx.runDir, `${model.name}-llama.f32`);
      const peer = await ctx.child<QualityResult>({ ...base, side: 'llama.cpp', configs: [{ side: 'llama.cpp', kv: 'f32', flashAttention: false }], referenceDump: dump }, `cross-${model.name}-llama`);
      const ours = await ctx.child<QualityResult>({ ...base, side: 'kvq', configs: CROSS_ENGINE_KVQ, referenceDump: '', externalReference: dump }, `cross-${model.name}-kvq`);
      const { path: _path, ...rest } = model;
      const result: CrossEngineModelResult = { scheme, model: rest, llamaCpp: peer.rows[0]!, kvq: ours.rows, positions: ours.positions, documents: documents.length };
      for (const r of ours.rows) ctx.log(`cross-engine ${model.name}: ${r.label} (${r.kvDtype ?? '?'}): KL(llama.cpp || kvq) ${r.klMean.toExponential(3)}, top-1 ${(r.top1Agreement * 100).toFixed(2)}% (largest llama.cpp top-2 gap at a disagreement ${r.maxDisagreementGap?.toFixed(4)} nats), NLL kvq ${r.nllMean.toFixed(4)} vs llama.cpp ${peer.rows[0]!.nllMean.toFixed(4)}`);
      out.push(result);
    }
  }
  return out;
}

/** Pass/fail of the targets (KL <= 2e-3, top-1 >= 98%) for every kvq row of every file. */
export function crossEngineTargets(results: readonly CrossEngineModelResult[]): { target: string; model: string; measured: string; met: boolean }[] {
  const { klMax, top1Min } = CROSS_ENGINE_TARGETS;
  return results.flatMap((r) =>
    r.kvq.map((row) => ({
      target: `same ${r.scheme.toUpperCase()} file: KL(llama.cpp f32 || ${row.label}) <= ${klMax} and top-1 >= ${top1Min * 100}% over ${r.positions} positions`,
      model: r.model.name,
      measured: `KL ${row.klMean.toExponential(2)}, top-1 ${(row.top1Agreement * 100).toFixed(2)}%`,
      met: row.klMean <= klMax && row.top1Agreement >= top1Min,
    })),
  );
}
