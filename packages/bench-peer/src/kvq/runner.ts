import { calibrate } from '@kvq/calibrate';
import { LLM, loadModel, type KvCacheDtype, type KvScales, type LoadedModel } from '@kvq/engine';

import { BenchPeerError } from '../errors.js';
import { logSoftmaxInto } from '../metrics.js';
import type { KvqKv } from '../protocol.js';

/** Tokens per KV block (kvq's default). */
const BLOCK = 16;
/** Prefill chunk, the same as llama.cpp's default batch (512). */
const PREFILL_CHUNK = 512;

/** Timing of one generation: ms from submitting the prompt to the first and to the last generated token. */
export interface GenerationTiming {
  readonly firstMs: number;
  readonly lastMs: number;
  readonly tokens: readonly number[];
}

/** kvq per-head FP8 e4m3 scales from `@kvq/calibrate` (dataset method, static min-max, per KV head). */
export async function calibratedHeadScales(model: LoadedModel, texts: readonly string[]): Promise<KvScales> {
  if (texts.length === 0) throw new BenchPeerError('INVALID_ARGUMENT', 'per-head calibration needs calibration texts, got none', { field: 'calibrationTexts' });
  const { scales } = await calibrate({
    model,
    method: 'dataset',
    dataset: [...texts],
    strategy: 'attn_head',
    format: 'e4m3fn',
    numSamples: texts.length,
    maxSeqLen: model.config.maxPositionEmbeddings - 1,
    reportSamples: 0,
  });
  const kvh = model.config.numKvHeads;
  return {
    granularity: 'head',
    layers: scales.layers.map((l) => ({ k: l.k, v: l.v, q: new Float32Array(kvh).fill(1) })),
    method: 'compressed-tensors',
    format: 'e4m3fn',
    fnuzAdjusted: false,
    layersFromCheckpoint: 0,
    warnings: [],
  };
}

/** One kvq `LLM` set up for measuring: no prefix caching, one sequence, 512-token prefill chunks. */
export class KvqRunner {
  private next = 0;
  private constructor(readonly llm: LLM) {}

  /**
   * @param model a GGUF path or a loaded model (shared by several configurations)
   * @param maxTokens the longest prompt + generation it must hold
   */
  static async open(model: string | LoadedModel, kv: KvqKv, maxTokens: number, kvScales?: KvScales): Promise<KvqRunner> {
    const loaded = typeof model === 'string' ? await loadModel(model) : model;
    const c = loaded.config;
    const blocks = Math.ceil((maxTokens + 1) / BLOCK) + 2;
    // Sized for this dtype (so the cache holds what the run needs and no more), plus room for scale arrays.
    const elementBytes = kv === 'float32' ? 4 : kv.startsWith('fp8') ? 1 : c.torchDtype === 'float32' ? 4 : 2;
    const kvCacheMemory = blocks * BLOCK * 2 * c.numLayers * c.numKvHeads * c.headDim * elementBytes + (1 << 20);
    const llm = await LLM.create({
      model: kvScales ? { ...loaded, kvScales } : loaded,
      kvCacheDtype: kv as KvCacheDtype,
      maxModelLen: maxTokens + 1,
      kvCacheMemory,
      blockSize: BLOCK,
      enablePrefixCaching: false,
      maxNumSeqs: 1,
      maxNumBatchedTokens: PREFILL_CHUNK,
    });
    // NOTE: no `backend: 'cpu'` option: LLM.create's loader then tries the name alone, cannot resolve it from
    // @kvq/kernels and silently falls back to the reference; the default (best available) finds the native one.
    if (llm.backend.name === 'reference') {
      llm.dispose();
      throw new BenchPeerError('INVALID_ARGUMENT', 'the native CPU backend (@kvq/kernels-cpu) did not load; measuring the TypeScript reference backend would be meaningless (run pnpm build:native)', { field: 'backend' });
    }
    return new KvqRunner(llm);
  }

  /** Engine facts for the report. */
  info(): Record<string, string | number | boolean> {
    const b = this.llm.backend as unknown as { name: string; isa?: string; threads?: number };
    return { engine: 'kvq', backend: b.name, ...(b.isa ? { isa: b.isa } : {}), ...(b.threads ? { threads: b.threads } : {}), kvDtype: this.llm.kvDtype };
  }

  /** Greedy generation of `count` tokens after `prompt` (EOS ignored), timed. */
  generate(prompt: readonly number[], count: number): GenerationTiming {
    const engine = this.llm.engine;
    const id = `bench-${this.next++}`;
    const t0 = performance.now();
    engine.addRequest(id, [...prompt], { temperature: 0, maxTokens: count, ignoreEos: true });
    let first: number | undefined;
    let last: number | undefined;
    let tokens: readonly number[] = [];
    while (engine.hasUnfinishedRequests()) {
      for (const out of engine.step()) {
        if (out.requestId !== id) continue;
        const o = out.outputs[0]!;
        if (first === undefined && o.tokenIds.length > 0) first = performance.now();
        if (out.finished) {
          last = performance.now();
          tokens = o.tokenIds;
        }
      }
    }
    if (first === undefined || last === undefined) throw new BenchPeerError('CHILD_FAILED', `kvq generated no token for a ${prompt.length}-token prompt`);
    return { firstMs: first - t0, lastMs: last - t0, tokens };
  }

  /** Log-probability rows (natural log, float64) of every position of `tokens` but the last, in order. */
  async logProbRows(tokens: readonly number[], onRow: (position: number, row: Float64Array) => void): Promise<void> {
    const vocab = this.llm.model.config.vocabSize;
    const row = new Float64Array(vocab);
    let pos = 0;
    await this.llm.score(tokens, (_first, logits, rows) => {
      for (let r = 0; r < rows; r++, pos++) {
        if (pos >= tokens.length - 1) continue;
        onRow(pos, logSoftmaxInto(logits.subarray(r * vocab, (r + 1) * vocab), row));
      }
    });
  }

  dispose(): void {
    this.llm.dispose();
  }
}
