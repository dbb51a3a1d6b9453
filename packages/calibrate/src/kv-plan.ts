import { EngineError, LLM, type KvCacheDtype, type KvCacheRotation, type LoadedModel } from '@kvq/engine';
import type { KernelBackend } from '@kvq/kernels';
import { CalibrateError, describeValue, throwIfAborted } from './errors.js';

/**
 * The KV dtypes a plan chooses from by default: the model dtype and the write-time-scaled dtypes (their scales are
 * computed when the cache is written, so no calibrated scales are needed for any layer).
 */
export const KV_PLAN_CANDIDATES: readonly KvCacheDtype[] = Object.freeze([
  'auto',
  'int8_per_token_head',
  'fp8_per_token_head',
  'int4_g16',
  'int4_g32',
  'int4_per_token_head',
  'nvfp4',
  'q4_0',
  'int4_g32_f16',
]);

/** Options of {@link planKvCacheLayers}. */
export interface KvPlanOptions {
  /** The model (loaded). */
  readonly model: LoadedModel;
  /** Token sequences to measure on (e.g. the calibration dataset's samples), each >= 2 tokens. */
  readonly sequences: readonly (readonly number[])[];
  /** Budget: KV bytes per token over all layers (K and V); the plan's bytes are at most this. */
  readonly kvBytesPerToken: number;
  /** The dtypes a layer may get. Default {@link KV_PLAN_CANDIDATES}. `'auto'` (the model dtype) is always a candidate. */
  readonly candidates?: readonly KvCacheDtype[];
  /** The rotation to measure (and run) the plan with. Default `'none'`. */
  readonly rotation?: KvCacheRotation;
  /**
   * Measure and choose K and V of each layer separately (default true): the plan may store a layer's V in another
   * dtype than its K (`layerValueDtypes`), which needs a backend with kernels for separate K and V dtypes (CPU, GPU,
   * reference; the GPU ones run such layers with a correctness-first attention kernel, not their tuned uniform ones).
   * `false`: one dtype per layer for K and V, measured together (half the passes; runs on every backend, and on the
   * GPU backends' fast uniform kernels).
   */
  readonly separateKv?: boolean;
  /** Kernel backend (object or name, see `LLMOptions.backend`). Default `'auto'`. */
  readonly backend?: KernelBackend | string;
  /** Called after each measured configuration. */
  readonly onProgress?: (done: number, total: number) => void;
  /** Cancels between configurations (`ABORTED`). */
  readonly signal?: AbortSignal;
}

/** One measured configuration: a dtype on one layer's K, V or both (the rest unquantized), or on every layer. */
export interface KvPlanMeasurement {
  /** The layer quantized, or `'all'`. */
  readonly layer: number | 'all';
  /** Which of the layer's pools got `dtype`: `'k'`, `'v'`, or `'kv'` (both). */
  readonly pool: 'k' | 'v' | 'kv';
  readonly dtype: KvCacheDtype;
  /** Mean KL(unquantized || this) of the next-token distributions, nats per position. */
  readonly kl: number;
  /** KV bytes per token this pool (or layer, or every layer) costs in this dtype. */
  readonly bytesPerToken: number;
}

/** What {@link planKvCacheLayers} found. */
export interface KvPlanResult {
  /** The chosen dtype of each layer (its K dtype where `layerValueDtypes` is given). */
  readonly layerDtypes: readonly KvCacheDtype[];
  /** The chosen V dtype of each layer, when some layer's V differs from its K (only with `separateKv`). */
  readonly layerValueDtypes?: readonly KvCacheDtype[];
  readonly rotation: KvCacheRotation;
  /** KV bytes per token of the plan (all layers). */
  readonly kvBytesPerToken: number;
  /** The budget asked for. */
  readonly budgetBytesPerToken: number;
  /** Sum of the chosen layers' (or pools') measured KL (the quantity the plan minimizes). */
  readonly predictedKl: number;
  /** KL of the whole plan, measured. */
  readonly measuredKl: number;
  /** Positions scored per configuration. */
  readonly positions: number;
  /** Every layer (x pool) x dtype measurement, then each candidate on all layers. */
  readonly measurements: readonly KvPlanMeasurement[];
}

/** Next-token log-probabilities of every scored position of `sequences` under `llm`. */
async function logProbRows(llm: LLM, sequences: readonly (readonly number[])[], vocab: number): Promise<Float32Array[]> {
  const rows: Float32Array[] = [];
  for (const ids of sequences) {
    await llm.score(ids, (_first, logits, n) => {
      for (let r = 0; r < n; r++) rows.push(logSoftmax(logits.subarray(r * vocab, (r + 1) * vocab)));
    });
    // score() returns logits for every position; the last one predicts nothing in the text.
    rows.pop();
  }
  return rows;
}

function logSoftmax(x: Float32Array): Float32Array {
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;
  let sum = 0;
  for (const v of x) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! - lse;
  return out;
}

/** Mean KL(p || q) over positions, p and q given as log-probabilities. */
function meanKl(ref: readonly Float32Array[], got: readonly Float32Array[]): number {
  let total = 0;
  for (let r = 0; r < ref.length; r++) {
    const p = ref[r]!;
    const q = got[r]!;
    let kl = 0;
    for (let i = 0; i < p.length; i++) {
      const lp = p[i]!;
      if (lp > -80) kl += Math.exp(lp) * (lp - q[i]!);
    }
    total += Math.max(0, kl);
  }
  return total / ref.length;
}

/**
 * Chooses a dtype per layer minimizing the summed per-layer KL within the byte budget: a multiple-choice knapsack
 * solved exactly over the (integer) bytes per token, keeping for each total only the smallest KL.
 * @returns the chosen index into each layer's options, or undefined when even the cheapest choices exceed the budget
 */
function chooseWithinBudget(options: readonly (readonly { bytes: number; kl: number }[])[], budget: number): number[] | undefined {
  let states = new Map<number, { kl: number; picks: number[] }>([[0, { kl: 0, picks: [] }]]);
  for (const layer of options) {
    const next = new Map<number, { kl: number; picks: number[] }>();
    for (const [bytes, s] of states) {
      layer.forEach((o, i) => {
        const b = bytes + o.bytes;
        if (b > budget) return;
        const kl = s.kl + o.kl;
        const have = next.get(b);
        if (!have || kl < have.kl) next.set(b, { kl, picks: [...s.picks, i] });
      });
    }
    // Keep the Pareto front: more bytes only if less KL.
    const sorted = [...next.entries()].sort((a, b) => a[0] - b[0]);
    states = new Map();
    let best = Infinity;
    for (const [b, s] of sorted) {
      if (s.kl < best) {
        states.set(b, s);
        best = s.kl;
      }
    }
    if (states.size === 0) return undefined;
  }
  let winner: { kl: number; picks: number[] } | undefined;
  for (const s of states.values()) if (!winner || s.kl < winner.kl) winner = s;
  return winner?.picks;
}

/**
 * The automatic per-layer KV-cache plan (`kvq calibrate --plan`): measures, on `sequences`, the KL each candidate dtype
 * causes when only one layer's K, or only its V, is quantized with it (everything else in the model dtype), for every
 * layer; picks the dtype of each layer's K and V that minimizes the summed KL within `kvBytesPerToken` (a
 * multiple-choice knapsack over the 2 x numLayers pools); then measures the whole plan and every candidate on all
 * layers (for comparison). With `separateKv: false`, K and V of a layer share one dtype, measured together.
 * Cost: `(2 × numLayers + 1) × (candidates − 1) + 2` scoring passes over `sequences` (`(numLayers + 1) × ...` with
 * `separateKv: false`), and the unquantized run's log-probabilities held in memory (positions × vocabulary × 4 bytes:
 * keep `sequences` short for large vocabularies).
 * @throws CalibrateError `INVALID_ARGUMENT` (bad budget, candidates, sequences; a budget below the cheapest plan),
 *   `ABORTED`; EngineError from the engine (e.g. a backend without kernels for a candidate)
 */
export async function planKvCacheLayers(options: KvPlanOptions): Promise<KvPlanResult> {
  const { model, signal } = options;
  const c = model.config;
  const budget = options.kvBytesPerToken;
  if (typeof budget !== 'number' || !Number.isFinite(budget) || budget <= 0) {
    throw new CalibrateError('INVALID_ARGUMENT', `kvBytesPerToken must be a positive number, got ${describeValue(budget)}`, { field: 'kvBytesPerToken' });
  }
  const candidates = [...new Set(['auto', ...(options.candidates ?? KV_PLAN_CANDIDATES)])] as KvCacheDtype[];
  const sequences = options.sequences.filter((s) => s.length >= 2);
  if (sequences.length === 0) throw new CalibrateError('INVALID_ARGUMENT', 'the plan needs at least one sequence of >= 2 tokens to measure on', { field: 'sequences' });
  const rotation = options.rotation ?? 'none';
  const maxLen = Math.max(...sequences.map((s) => s.length));
  const separate = options.separateKv ?? true;
  const open = async (keys: readonly KvCacheDtype[], values: readonly KvCacheDtype[] = keys) => {
    try {
      return await LLM.create({
        model,
        backend: options.backend ?? 'auto',
        kvCacheLayerDtypes: keys,
        ...(values !== keys ? { kvCacheLayerValueDtypes: values } : {}),
        kvCacheRotation: rotation,
        maxModelLen: Math.max(maxLen + 1, 2),
        kvCacheMemory: 32 << 20,
        enablePrefixCaching: false,
        maxNumSeqs: 1,
        onWarning: () => {},
      });
    } catch (error) {
      if (error instanceof EngineError && error.field === 'kvCacheLayerDtypes') {
        throw new CalibrateError('INVALID_ARGUMENT', `candidates: ${error.message}`, { field: 'candidates', cause: error });
      }
      if (error instanceof EngineError && error.field === 'kvCacheLayerValueDtypes') {
        throw new CalibrateError('INVALID_ARGUMENT', `separateKv: ${error.message}; pass separateKv: false (CLI: --plan-same-kv) for one dtype per layer`, { field: 'separateKv', cause: error });
      }
      throw error;
    }
  };
  const allAuto = new Array<KvCacheDtype>(c.numLayers).fill('auto');
  const pools: readonly ('k' | 'v' | 'kv')[] = separate ? ['k', 'v'] : ['kv'];
  const total = (pools.length * c.numLayers + 1) * (candidates.length - 1) + 2;
  let done = 0;
  const step = () => {
    options.onProgress?.(++done, total);
    throwIfAborted(signal, 'KV plan');
  };
  const base = await open(allAuto);
  const ref = await logProbRows(base, sequences, c.vocabSize);
  const autoTotal = base.kvBytesPerToken;
  // Bytes per token of one item (a layer, or one of its pools) in the model dtype.
  const autoItem = autoTotal / c.numLayers / (separate ? 2 : 1);
  base.dispose();
  step();

  const measurements: KvPlanMeasurement[] = [];
  // Knapsack items: each layer ('kv'), or each layer's K then V.
  const items: { layer: number; pool: 'k' | 'v' | 'kv'; options: { bytes: number; kl: number; dtype: KvCacheDtype }[] }[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    for (const pool of pools) {
      const item = { layer: l, pool, options: [{ bytes: autoItem, kl: 0, dtype: 'auto' as KvCacheDtype }] };
      items.push(item);
      for (const dtype of candidates) {
        if (dtype === 'auto') continue;
        const keys = allAuto.slice();
        const values = separate ? allAuto.slice() : keys;
        (pool === 'v' ? values : keys)[l] = dtype;
        const llm = await open(keys, values);
        const kl = meanKl(ref, await logProbRows(llm, sequences, c.vocabSize));
        const bytes = llm.kvBytesPerToken - (autoTotal - autoItem);
        llm.dispose();
        item.options.push({ bytes, kl, dtype });
        measurements.push({ layer: l, pool, dtype, kl, bytesPerToken: bytes });
        step();
      }
    }
  }
  const picks = chooseWithinBudget(items.map((i) => i.options), budget);
  if (!picks) {
    const cheapest = items.reduce((n, i) => n + Math.min(...i.options.map((o) => o.bytes)), 0);
    throw new CalibrateError('INVALID_ARGUMENT', `kvBytesPerToken ${budget} is below the cheapest plan of these candidates (${cheapest} bytes per token)`, { field: 'kvBytesPerToken' });
  }
  const chosen = picks.map((p, i) => items[i]!.options[p]!);
  const layerDtypes = separate ? chosen.filter((_, i) => i % 2 === 0).map((o) => o.dtype) : chosen.map((o) => o.dtype);
  const valueDtypes = separate ? chosen.filter((_, i) => i % 2 === 1).map((o) => o.dtype) : layerDtypes;
  const split = valueDtypes.some((d, l) => d !== layerDtypes[l]);
  const predictedKl = chosen.reduce((n, o) => n + o.kl, 0);
  const planned = await open(layerDtypes, split ? valueDtypes : layerDtypes);
  const measuredKl = meanKl(ref, await logProbRows(planned, sequences, c.vocabSize));
  const kvBytesPerToken = planned.kvBytesPerToken;
  planned.dispose();
  step();
  for (const dtype of candidates) {
    if (dtype === 'auto') continue;
    const llm = await open(new Array<KvCacheDtype>(c.numLayers).fill(dtype));
    measurements.push({ layer: 'all', pool: 'kv', dtype, kl: meanKl(ref, await logProbRows(llm, sequences, c.vocabSize)), bytesPerToken: llm.kvBytesPerToken });
    llm.dispose();
    step();
  }
  return {
    layerDtypes,
    ...(split ? { layerValueDtypes: valueDtypes } : {}),
    rotation,
    kvBytesPerToken,
    budgetBytesPerToken: budget,
    predictedKl,
    measuredKl,
    positions: ref.length,
    measurements,
  };
}
