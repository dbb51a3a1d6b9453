/**
 * `LLM.create`'s part of `kvCacheKeepSink` / `kvCacheKeepRecent`: which layers keep tokens in the model dtype, a
 * check that the backend can merge attention, and the kept cache itself (runtime/kv-keep.ts has the mechanism).
 * @module
 */
import { isFp8Dtype, isKvQuantDtype, KvCacheStorage, type KvStorageDtype } from '@kvq/cache';
import { KernelError, type KernelBackend } from '@kvq/kernels';
import { EngineError } from '../errors.js';
import type { LlamaDims } from '../runtime/forward.js';
import { keptBlocksPerSequence, type KvKeep, type KvKeepConfig } from '../runtime/kv-keep.js';
import { probeDecode } from './kv-support.js';

/** What {@link createKvKeep} needs. */
export interface KvKeepSetup {
  readonly backend: KernelBackend;
  readonly config: KvKeepConfig;
  /** The main cache (its per-layer dtypes decide which layers keep tokens). */
  readonly storage: KvCacheStorage;
  readonly dims: LlamaDims;
  /** The model dtype: the kept cache's. */
  readonly modelDtype: KvStorageDtype;
  /** The scheduler's maximum of running sequences (the kept cache holds that many sequences' blocks). */
  readonly maxNumSeqs: number;
}

/**
 * The kept cache of a model: the layers whose cache is quantized (FP8 or a write-time-scaled dtype) and attend to
 * every position (sliding-window layers see only recent tokens; their own window decides) keep sink and tail tokens.
 * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheKeepSink`) when no layer qualifies (a float cache, or only
 *   sliding-window layers), or when the backend's `pagedAttention` does not return the log-sum-exp the merge needs
 *   (the GPU backends today; the message names the backend)
 */
export function createKvKeep(s: KvKeepSetup): KvKeep {
  const { dims, storage, config } = s;
  const quantized = (d: KvStorageDtype): boolean => isFp8Dtype(d) || isKvQuantDtype(d);
  const layers = storage.layerDtypes.map((dtype, l) => {
    const window = dims.layers ? dims.layers[l]?.slidingWindow : dims.slidingWindow;
    return (quantized(dtype) || quantized(storage.layerValueDtypes[l]!)) && window === undefined;
  });
  if (!layers.some(Boolean)) {
    throw new EngineError(
      'INVALID_ARGUMENT',
      `kvCacheKeepSink / kvCacheKeepRecent keep tokens of a quantized KV cache in the model dtype, but no full-attention layer of this model has a quantized cache (layer dtypes: ${[...new Set(storage.layerDtypes)].join(', ')}); choose a kvCacheDtype such as fp8 or int4_per_token_head`,
      { field: 'kvCacheKeepSink' },
    );
  }
  checkLseOnBackend(s.backend);
  const numBlocks = s.maxNumSeqs * keptBlocksPerSequence(config) + 1;
  const kept = new KvCacheStorage({
    dtype: s.modelDtype,
    numLayers: dims.numLayers,
    numBlocks,
    blockSize: config.blockSize,
    numKvHeads: dims.numKvHeads,
    headSize: dims.headDim,
    numHeads: dims.numHeads,
  });
  return { config, storage: kept, layers };
}

/** One decode over a one-token f32 cache with `lse`: the backend must fill it. */
function checkLseOnBackend(backend: KernelBackend): void {
  const cache = new KvCacheStorage({ dtype: 'f32', numLayers: 1, numBlocks: 2, blockSize: 1, numKvHeads: 1, headSize: 8 }).layer(0);
  const lse = Float32Array.of(NaN);
  try {
    probeDecode(backend, cache, new Float32Array(8), 1, lse);
  } catch (cause) {
    if (!(cause instanceof KernelError)) throw cause;
    throw new EngineError(
      'INVALID_ARGUMENT',
      `kvCacheKeepSink / kvCacheKeepRecent need attention that returns its log-sum-exp, which backend '${backend.name}' does not (${cause.message}); the reference, CPU, CUDA and ROCm backends do`,
      { field: 'kvCacheKeepSink', cause },
    );
  }
  // One key with a zero score: ln(e^0) = 0.
  if (lse[0] !== 0) {
    throw new EngineError('INVALID_ARGUMENT', `kvCacheKeepSink / kvCacheKeepRecent: backend '${backend.name}' ignored the attention lse output (got ${lse[0]} for 0)`, {
      field: 'kvCacheKeepSink',
    });
  }
}
