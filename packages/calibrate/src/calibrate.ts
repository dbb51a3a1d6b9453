import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { KV_SCALE_CONSTANTS, LLM, loadModel, SeededRng, type HubDownloadProgress, type HubSettings, type KvScales, type LoadedModel } from '@kvq/engine';
import { formatInfo, scalesFromAmax, type Fp8Format } from '@kvq/fp8';
import type { KernelBackend } from '@kvq/kernels';

import { readDataset, selectSamples, tokenizeSample, type Dataset, type DatasetFormat, type InlineDataset } from './dataset.js';
import { CalibrateError, checkChoice, checkInt, describeValue, throwIfAborted } from './errors.js';
import { headMinMax, MinMaxObserver, OBSERVER_KINDS, tensorMinMax, type ObserverKind } from './observers.js';
import { kvqVersion, type Provenance } from './provenance.js';
import { QuantStatsAccumulator, type CalibrationReport, type LayerReport } from './report.js';
import { CALIBRATION_FORMATS, SCALE_STRATEGIES, type CalibratedScales, type LayerScales, type ScaleStrategy } from './scales.js';

/**
 * How scales are obtained (vLLM's three ways, spec §2–§4):
 * - `none`: every q/k/v scale 1.0 (vLLM's default without a checkpoint; warns for e4m3).
 * - `random`: `calculate_kv_scales` — one forward pass over a batch of seeded random tokens, then q and k scale =
 *   amax / 200 and v scale = amax / 100 per layer (per head for `attn_head`), fixed afterwards.
 * - `dataset`: llm-compressor `oneshot` — observers over calibration samples, scale = amax / max finite of the format.
 */
export type CalibrationMethod = 'none' | 'random' | 'dataset';

/** Every {@link CalibrationMethod}. */
export const CALIBRATION_METHODS: readonly CalibrationMethod[] = Object.freeze(['dataset', 'random', 'none']);

/** Progress of {@link calibrate}, reported after each sample (for a progress bar). */
export interface CalibrationProgress {
  /** `calibrate`: the calibration pass; `report`: the statistics pass under the final scales. */
  readonly phase: 'calibrate' | 'report';
  /** Samples processed in this phase, and in all. */
  readonly samplesDone: number;
  readonly samplesTotal: number;
  /** Tokens processed in this phase so far. */
  readonly tokensDone: number;
}

/** Options of {@link calibrate}. */
export interface CalibrateOptions {
  /** A model folder or file `loadModel` reads (HF folder, GGUF, llama2.c), or an already loaded model. */
  readonly model: string | LoadedModel;
  /** Default `'dataset'` when `dataset` is given, else `'random'`. */
  readonly method?: CalibrationMethod;
  /**
   * Calibration data: a JSONL file of `{ "messages": [...] }` conversations (rendered with the model's chat
   * template) or `{ "text": ... }` records, a text file (one sample per line), a Parquet file, a Hugging Face Hub
   * dataset `org/name[@revision]` (see `datasetSplit`, `datasetColumn`), or an inline array.
   * Required for `dataset`; for `none` / `random` it is only used for the report's statistics.
   */
  readonly dataset?: string | InlineDataset;
  /** How to read the dataset file. Default `'auto'` (by extension, then content). */
  readonly datasetFormat?: DatasetFormat;
  /** The record field / Parquet column holding each sample. Default `messages` when present, else `text`. */
  readonly datasetColumn?: string;
  /** Hub datasets (`dataset: 'org/name[@revision]'`): the split. Default `train`. */
  readonly datasetSplit?: string;
  /** Hub datasets: settings, default from `process.env` (see `hubSettings` in @kvq/engine). */
  readonly hub?: HubSettings;
  /** Hub datasets: download progress per file, in bytes. */
  readonly onDownloadProgress?: (p: HubDownloadProgress) => void;
  /** Default `'tensor'`. */
  readonly strategy?: ScaleStrategy;
  /** Dataset observer. Default `'static_minmax'` (max over all samples). */
  readonly observer?: ObserverKind;
  /** Samples drawn from the dataset (after the seeded shuffle). Default 512. */
  readonly numSamples?: number;
  /** Tokens per sample (longer ones are truncated; also the random batch length). Default 2048, at most the model's context − 1. */
  readonly maxSeqLen?: number;
  /** Seed of the dataset shuffle and of the random tokens. Default 42. */
  readonly seed?: number;
  /** Also calibrate q scales (FP8 attention, FlashAttention-3 style). Default false. */
  readonly quantizeQuery?: boolean;
  /** FP8 format of the KV cache the scales are for. Default `'e4m3fn'` (vLLM `fp8` / `fp8_e4m3` on CUDA). */
  readonly format?: Fp8Format;
  /**
   * Quantize the cache with the running scales during calibration, so later layers see the quantization error
   * (llm-compressor does). `false` calibrates on an unquantized cache. Default true.
   */
  readonly fakeQuantize?: boolean;
  /** Samples of the statistics pass under the final scales (0 = none). Default 32. */
  readonly reportSamples?: number;
  /** Kernel backend object or name (`'cpu'`, `'reference'`). Default: best available. */
  readonly backend?: KernelBackend | string;
  /** Called after every sample. */
  readonly onProgress?: (progress: CalibrationProgress) => void;
  /** Stops between samples with a `CalibrateError` `ABORTED`. */
  readonly signal?: AbortSignal;
}

/** What {@link calibrate} returns. */
export interface CalibrationResult {
  readonly scales: CalibratedScales;
  readonly report: CalibrationReport;
  readonly provenance: Provenance;
  /** The model calibrated (its `path` is the source for {@link writeCheckpoint}). */
  readonly model: LoadedModel;
  readonly warnings: readonly string[];
}

const DEFAULTS = { numSamples: 512, maxSeqLen: 2048, seed: 42, reportSamples: 32 } as const;

interface SlotObservers {
  readonly tensor: MinMaxObserver;
  readonly head: MinMaxObserver;
}

interface LayerObservers {
  readonly q: SlotObservers;
  readonly k: SlotObservers;
  readonly v: SlotObservers;
}

/**
 * The `random` method's batch: `length` token ids uniform in `[0, vocabSize)` from a seeded generator
 * (xoshiro128**, `SeededRng`). Also used by the report pass when there is no dataset.
 */
export function randomCalibrationTokens(seed: number, length: number, vocabSize: number): number[] {
  const rng = new SeededRng(seed);
  return Array.from({ length }, () => Math.floor(rng.next() * vocabSize));
}

/** Refuse models without attention layers before loading any weight. */
async function checkHasAttention(model: string | LoadedModel): Promise<void> {
  let layers: unknown;
  let heads: unknown;
  let where: string;
  if (typeof model === 'string') {
    let raw: Record<string, unknown>;
    where = join(model, 'config.json');
    try {
      raw = JSON.parse(await readFile(where, 'utf8')) as Record<string, unknown>;
    } catch {
      return; // not an HF folder (GGUF, llama2.c) or unreadable: loadModel reports it
    }
    const text = (raw.text_config ?? raw) as Record<string, unknown>;
    layers = text.num_hidden_layers;
    heads = text.num_attention_heads;
    const types = text.layer_types;
    if (Array.isArray(types) && types.length > 0 && !types.some((t) => typeof t === 'string' && t.includes('attention'))) {
      throw new CalibrateError('NO_ATTENTION_LAYERS', `${where}: layer_types has no attention layer (${types.slice(0, 4).join(', ')}...); there is no KV cache to calibrate`, {
        file: where,
        field: 'layer_types',
      });
    }
    if (layers === undefined && heads === undefined) return;
  } else {
    where = model.path;
    layers = model.config.numLayers;
    heads = model.config.numHeads;
  }
  if (layers === 0 || heads === 0 || heads === null) {
    throw new CalibrateError('NO_ATTENTION_LAYERS', `${where}: the model has no attention layers (num_hidden_layers ${describeValue(layers)}, num_attention_heads ${describeValue(heads)}); there is no KV cache to calibrate`, {
      file: where,
      field: layers === 0 ? 'num_hidden_layers' : 'num_attention_heads',
    });
  }
}

/** Unit KV scales in the chosen granularity, so `LLM.create` builds a cache with per-tensor or per-head scale arrays. */
function unitKvScales(model: LoadedModel, strategy: ScaleStrategy, format: Fp8Format): KvScales {
  const c = model.config;
  const n = strategy === 'attn_head' ? c.numKvHeads : 1;
  return {
    granularity: strategy === 'attn_head' ? 'head' : 'tensor',
    layers: Array.from({ length: c.numLayers }, () => ({ k: new Float32Array(n).fill(1), v: new Float32Array(n).fill(1), q: new Float32Array(n).fill(1) })),
    method: 'compressed-tensors',
    format,
    fnuzAdjusted: false,
    layersFromCheckpoint: 0,
    warnings: [],
  };
}

/** Per-query-head q scales as FP8 attention applies them: the max over each GQA group (vLLM's reduction). */
function effectiveQueryScales(q: Float32Array, numHeads: number, numKvHeads: number): Float32Array {
  if (q.length === 1) return q;
  const group = numHeads / numKvHeads;
  const out = new Float32Array(numHeads);
  for (let g = 0; g < numKvHeads; g++) {
    const m = Math.max(...q.subarray(g * group, (g + 1) * group));
    out.fill(m, g * group, (g + 1) * group);
  }
  return out;
}

/**
 * Calibrate a model's FP8 KV-cache scales (and q scales for FP8 attention) with one of vLLM's three methods, per
 * tensor or per attention head, and measure the quantized cache under the result.
 *
 * The model runs through the engine (`LLM`, paged FP8 cache): an attention observer sees each layer's post-RoPE
 * q/k/v before the cache write, updates the observers and (dataset method, `fakeQuantize`) sets the layer's scales
 * from them, so the write quantizes with them and later layers see the error, as llm-compressor does.
 * Deterministic for a given seed.
 * @example
 * const { scales, report } = await calibrate({ model: 'models/my-llama', dataset: 'chats.jsonl', strategy: 'attn_head' });
 * await writeCheckpoint({ model: 'models/my-llama', out: 'models/my-llama-fp8kv', scales });
 * @throws CalibrateError `INVALID_ARGUMENT` (unknown method/strategy/observer/format, bad numbers), dataset errors
 *   (`DATASET_NOT_FOUND`, `DATASET_MALFORMED` with the line, `DATASET_EMPTY`, `NO_CHAT_TEMPLATE`),
 *   `NO_ATTENTION_LAYERS`, `NON_FINITE_ACTIVATION`, `ABORTED`; and EngineError from loading the model
 */
export async function calibrate(options: CalibrateOptions): Promise<CalibrationResult> {
  if (typeof options !== 'object' || options === null) {
    throw new CalibrateError('INVALID_ARGUMENT', `options must be an object, got ${describeValue(options)}`);
  }
  const method = checkChoice('method', options.method ?? (options.dataset !== undefined ? 'dataset' : 'random'), CALIBRATION_METHODS);
  const strategy = checkChoice('strategy', options.strategy ?? 'tensor', SCALE_STRATEGIES);
  const observerKind = checkChoice('observer', options.observer ?? 'static_minmax', OBSERVER_KINDS);
  const format = checkChoice('format', options.format ?? 'e4m3fn', CALIBRATION_FORMATS);
  const numSamples = checkInt('numSamples', options.numSamples ?? DEFAULTS.numSamples, 1);
  const maxSeqLenAsked = checkInt('maxSeqLen', options.maxSeqLen ?? DEFAULTS.maxSeqLen, 1);
  const seed = checkInt('seed', options.seed ?? DEFAULTS.seed, 0, 2 ** 32 - 1);
  const reportSamplesAsked = checkInt('reportSamples', options.reportSamples ?? DEFAULTS.reportSamples, 0);
  const quantizeQuery = options.quantizeQuery ?? false;
  const fakeQuantize = options.fakeQuantize ?? true;
  if (method === 'dataset' && options.dataset === undefined) {
    throw new CalibrateError('INVALID_ARGUMENT', `method 'dataset' needs a dataset (a JSONL or text file, or an array of samples)`, { field: 'dataset' });
  }
  const { signal, onProgress } = options;
  throwIfAborted(signal, 'calibration');
  const warnings: string[] = [];

  const dataset: Dataset | undefined = options.dataset !== undefined ? await readDataset(options.dataset, {
        format: options.datasetFormat ?? 'auto',
        ...(options.datasetColumn !== undefined ? { column: options.datasetColumn } : {}),
        ...(options.datasetSplit !== undefined ? { split: options.datasetSplit } : {}),
        ...(options.hub ? { hub: options.hub } : {}),
        ...(options.onDownloadProgress ? { onDownloadProgress: options.onDownloadProgress } : {}),
      }) : undefined;
  await checkHasAttention(options.model);
  const model = typeof options.model === 'string' ? await loadModel(options.model) : options.model;
  await checkHasAttention(model);
  throwIfAborted(signal, 'calibration');
  const c = model.config;
  const maxSeqLen = Math.min(maxSeqLenAsked, c.maxPositionEmbeddings - 1);
  if (maxSeqLen < maxSeqLenAsked && options.maxSeqLen !== undefined) {
    warnings.push(`maxSeqLen ${maxSeqLenAsked} exceeds the model's context (${c.maxPositionEmbeddings}); samples are truncated to ${maxSeqLen} tokens`);
  }

  // Token sequences: the dataset's selected samples, or one seeded batch of random tokens.
  let sequences: number[][] = [];
  if (dataset) {
    const chosen = selectSamples(dataset.samples, numSamples, seed);
    if (chosen.length < numSamples && method === 'dataset') {
      warnings.push(`the dataset has ${dataset.samples.length} samples, fewer than numSamples ${numSamples}; using all of them`);
    }
    sequences = chosen.map((s) => tokenizeSample(s, model, maxSeqLen, dataset.source)).filter((ids) => ids.length > 0);
    const dropped = chosen.length - sequences.length;
    if (sequences.length === 0) throw new CalibrateError('DATASET_EMPTY', `${dataset.source}: every selected sample tokenizes to no tokens`, { file: dataset.source });
    if (dropped > 0) warnings.push(`${dropped} samples tokenize to no tokens and were skipped`);
  }
  const randomTokens = randomCalibrationTokens(seed, maxSeqLen, c.vocabSize);

  const H = c.numHeads;
  const KVH = c.numKvHeads;
  const D = c.headDim;
  const perHead = strategy === 'attn_head';
  const info = formatInfo(format);
  const kvDtype = format;
  const blockSize = 16;
  const ownBackend = typeof options.backend !== 'object';
  // One sequence of maxSeqLen (+1 generated) tokens, as one step; the cache holds exactly that plus slack.
  const cacheBytes = (fp8: boolean) => {
    const element = fp8 ? 1 : c.torchDtype === 'float32' ? 4 : 2;
    return (Math.ceil((maxSeqLen + 1) / blockSize) + 3) * blockSize * c.numLayers * 2 * KVH * D * element + (1 << 20);
  };
  const makeLlm = (fp8: boolean) =>
    LLM.create({
      model: { ...model, kvScales: unitKvScales(model, strategy, format) },
      kvCacheDtype: fp8 ? kvDtype : 'auto',
      fp8Query: fp8 && quantizeQuery,
      maxModelLen: c.maxPositionEmbeddings,
      kvCacheMemory: cacheBytes(fp8),
      blockSize,
      enablePrefixCaching: false,
      maxNumSeqs: 1,
      maxNumBatchedTokens: Math.max(maxSeqLen + 1, 16),
      ...(options.backend !== undefined ? { backend: options.backend } : {}),
    });
  const llms: LLM[] = [];
  const cleanup = () => {
    if (ownBackend) for (const l of llms) l.dispose();
  };

  try {
    const calibLlm = await makeLlm(method !== 'dataset' || fakeQuantize);
    llms.push(calibLlm);
    const run = async (llm: LLM, ids: readonly number[]) => {
      await llm.generate([{ promptTokenIds: ids }], { maxTokens: 1, temperature: 0, ignoreEos: true });
    };

    const observers: LayerObservers[] = Array.from({ length: c.numLayers }, () => {
      const slot = (heads: number): SlotObservers => ({ tensor: new MinMaxObserver(observerKind, 1), head: new MinMaxObserver(observerKind, heads) });
      return { q: slot(H), k: slot(KVH), v: slot(KVH) };
    });
    const observe = (layer: number, t: { query: Float32Array; key: Float32Array; value: Float32Array; numTokens: number }) => {
      const o = observers[layer]!;
      for (const [slot, x, heads] of [['q', t.query, H], ['k', t.key, KVH], ['v', t.value, KVH]] as const) {
        const mm = headMinMax(x, t.numTokens, heads, D, `layer ${layer} ${slot === 'q' ? 'query' : slot === 'k' ? 'key' : 'value'}`);
        o[slot].head.update(mm.min, mm.max);
        const tm = tensorMinMax(mm);
        o[slot].tensor.update(tm.min, tm.max);
      }
    };
    const amaxOf = (s: SlotObservers) => (perHead ? s.head.amax() : s.tensor.amax());
    const divisors =
      method === 'random' ? { ...KV_SCALE_CONSTANTS } : { q: info.scaleMax, k: info.scaleMax, v: info.scaleMax };
    const scalesOf = (layer: number): LayerScales => {
      const o = observers[layer]!;
      const s = (slot: SlotObservers, divisor: number) => scalesFromAmax(amaxOf(slot), format, { maxValue: divisor });
      return { k: s(o.k, divisors.k), v: s(o.v, divisors.v), q: quantizeQuery ? s(o.q, divisors.q) : undefined };
    };
    const apply = (llm: LLM, layer: number, l: LayerScales) => {
      llm.engine.storage.setScales(layer, { kScale: l.k, vScale: l.v, ...(l.q ? { qScale: l.q } : {}) });
    };

    let calibTokens = 0;
    let calibSamples = 0;
    if (method === 'random') {
      // vLLM calculate_kv_scales: each layer's scales from the first (only) pass, set before that layer's write.
      const seen = new Set<number>();
      calibLlm.engine.setAttentionObserver((layer, t) => {
        if (seen.has(layer)) return;
        seen.add(layer);
        observe(layer, t);
        apply(calibLlm, layer, scalesOf(layer));
      });
      await run(calibLlm, randomTokens);
      calibLlm.engine.setAttentionObserver(undefined);
      calibTokens = randomTokens.length;
      calibSamples = 1;
      onProgress?.({ phase: 'calibrate', samplesDone: 1, samplesTotal: 1, tokensDone: calibTokens });
    } else if (method === 'dataset') {
      calibLlm.engine.setAttentionObserver((layer, t) => {
        observe(layer, t);
        if (fakeQuantize) apply(calibLlm, layer, scalesOf(layer));
      });
      for (const ids of sequences) {
        throwIfAborted(signal, 'calibration');
        await run(calibLlm, ids);
        calibSamples++;
        calibTokens += ids.length;
        onProgress?.({ phase: 'calibrate', samplesDone: calibSamples, samplesTotal: sequences.length, tokensDone: calibTokens });
      }
      calibLlm.engine.setAttentionObserver(undefined);
    }

    // Final scales.
    const layers: LayerScales[] =
      method === 'none'
        ? Array.from({ length: c.numLayers }, () => {
            const n = perHead ? KVH : 1;
            return { k: new Float32Array(n).fill(1), v: new Float32Array(n).fill(1), q: quantizeQuery ? new Float32Array(perHead ? H : 1).fill(1) : undefined };
          })
        : observers.map((_, l) => scalesOf(l));
    const scales: CalibratedScales = { format, strategy, numHeads: H, numKvHeads: KVH, layers };
    if (method === 'none' && format.startsWith('e4m3')) {
      warnings.push(
        'Using KV cache scaling factor 1.0 for fp8_e4m3. If this is unintended, verify that k/v_scale scaling factors are properly set in the checkpoint.',
      );
    }
    if (method === 'none' && quantizeQuery) {
      warnings.push('Using uncalibrated q_scale 1.0 with fp8 attention. This may cause accuracy issues.');
    }

    // Report pass: the final scales frozen, statistics of what the cache stores.
    throwIfAborted(signal, 'calibration');
    const reportLlm = calibLlm.kvDtype === kvDtype ? calibLlm : await makeLlm(true);
    if (reportLlm !== calibLlm) llms.push(reportLlm);
    layers.forEach((l, i) => apply(reportLlm, i, l));
    const reportSeqs = (sequences.length > 0 ? sequences : [randomTokens]).slice(0, reportSamplesAsked);
    const acc = Array.from({ length: c.numLayers }, () => ({
      q: new QuantStatsAccumulator(H, D, format),
      k: new QuantStatsAccumulator(KVH, D, format),
      v: new QuantStatsAccumulator(KVH, D, format),
    }));
    const qEffective = layers.map((l) => (l.q ? effectiveQueryScales(l.q, H, KVH) : undefined));
    const needObservations = method === 'none';
    reportLlm.engine.setAttentionObserver((layer, t) => {
      if (needObservations) observe(layer, t);
      const a = acc[layer]!;
      const l = layers[layer]!;
      a.k.add(t.key, t.numTokens, l.k);
      a.v.add(t.value, t.numTokens, l.v);
      const q = qEffective[layer];
      if (q) a.q.add(t.query, t.numTokens, q);
    });
    let reportTokens = 0;
    for (let i = 0; i < reportSeqs.length; i++) {
      throwIfAborted(signal, 'calibration');
      await run(reportLlm, reportSeqs[i]!);
      reportTokens += reportSeqs[i]!.length;
      onProgress?.({ phase: 'report', samplesDone: i + 1, samplesTotal: reportSeqs.length, tokensDone: reportTokens });
    }
    reportLlm.engine.setAttentionObserver(undefined);

    const layerReports: LayerReport[] = layers.map((l, i) => {
      const o = observers[i]!;
      const a = acc[i]!;
      const amaxCols = (s: SlotObservers) => (perHead ? s.head.amax() : s.tensor.amax());
      const observedCols = (s: SlotObservers) => (perHead ? s.head.observedAbsMax() : s.tensor.observedAbsMax());
      // Per-head rows also carry each head's own amax under a per-tensor strategy.
      const headAmax = (s: SlotObservers) => s.head.amax();
      const slotReport = (s: SlotObservers, accum: QuantStatsAccumulator, sc: Float32Array) => {
        const r = accum.result(headAmax(s), s.head.observedAbsMax(), sc);
        return { ...r, amax: Math.max(...amaxCols(s)), observedAbsMax: Math.max(...observedCols(s)) };
      };
      return {
        layer: i,
        k: slotReport(o.k, a.k, l.k),
        v: slotReport(o.v, a.v, l.v),
        q: l.q ? slotReport(o.q, a.q, qEffective[i]!) : undefined,
      };
    });
    const report: CalibrationReport = {
      method,
      strategy,
      observer: method === 'dataset' ? observerKind : undefined,
      format,
      quantizeQuery,
      samples: calibSamples,
      tokens: calibTokens,
      reportSamples: reportSeqs.length,
      reportTokens,
      layers: layerReports,
      warnings,
    };
    const provenance: Provenance = {
      tool: 'kvq',
      kvqVersion: kvqVersion(),
      method,
      strategy,
      observer: method === 'dataset' ? observerKind : undefined,
      format,
      quantizeQuery,
      fakeQuantize: method === 'random' || (method === 'dataset' && fakeQuantize),
      seed,
      numSamplesRequested: numSamples,
      numSamples: calibSamples,
      numTokens: calibTokens,
      maxSeqLen,
      datasetSha256: method === 'dataset' ? dataset?.sha256 : undefined,
      dataset: method === 'dataset' && dataset ? (dataset.source === '<inline>' ? '<inline>' : basename(dataset.source)) : undefined,
      datasetRecords: method === 'dataset' ? dataset?.samples.length : undefined,
      divisors,
    };
    return { scales, report, provenance, model, warnings };
  } finally {
    cleanup();
  }
}
