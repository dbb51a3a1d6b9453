import { CacheError, isKvQuantDtype, KvCacheStorage, type KvLayerCache, type KvStorageDtype } from '@kvq/cache';
import { KernelError, type KernelBackend } from '@kvq/kernels';
import { EngineError } from '../errors.js';

/** The KV shape a probe writes and reads: a model's, or a small generic one before the model is loaded. */
export interface KvProbeShape {
  /** Key/value heads. */
  readonly numKvHeads: number;
  /** Query heads, a multiple of `numKvHeads`. */
  readonly numHeads: number;
  /** Elements per head. */
  readonly headSize: number;
  /** Tokens per block. */
  readonly blockSize: number;
}

/**
 * A shape every write-time-scaled dtype accepts (head size 64 is a multiple of every group size), for the check
 * made before a model is loaded.
 */
export const GENERIC_KV_PROBE_SHAPE: KvProbeShape = { numKvHeads: 1, numHeads: 2, headSize: 64, blockSize: 16 };

/**
 * A backend probe: one decode step of one sequence whose only key is slot 0 of block 1 of `cache` (block 0 is the
 * manager's null block), `query` `[numHeads, headSize]`; the output is discarded, `lse` is passed through.
 */
export function probeDecode(backend: KernelBackend, cache: KvLayerCache, query: Float32Array, numHeads: number, lse?: Float32Array): void {
  backend.pagedAttention({
    query,
    out: new Float32Array(query.length),
    cache,
    queryStartLoc: Int32Array.of(0, 1),
    seqLens: Int32Array.of(1),
    blockTables: Int32Array.of(1),
    maxBlocksPerSeq: 1,
    numSeqs: 1,
    numHeads,
    lse,
  });
}

/**
 * Checks, before any request runs, that `backend` has kernels for the write-time-scaled KV dtype `dtype`
 * (`int8_per_token_head`, `nvfp4`, ..., docs/spec/kv-dtypes.md), or for a cache storing K in `dtype` and V in
 * `valueDtype`: one token is written with `reshapeAndCache` into a scratch one-layer cache of `shape` and read back
 * with `pagedAttention`. The model's own pools are not touched. Other uniform dtypes (float, FP8 per tensor / per
 * head) are not probed: every backend implements them.
 *
 * NOTE: the probe asks the backend itself rather than a list of names, so a backend that gains kernels (or a
 * third-party one that has them) passes without an engine change.
 * @param requested the `kvCacheDtype` option as the user wrote it (for the message)
 * @param valueDtype the V pool's dtype. Default `dtype`.
 * @param field the option named in the error. Default `'kvCacheDtype'`.
 * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheDtype`, the KernelError as `cause`) when the backend refuses the
 *   dtype (`UNSUPPORTED`: the message names the dtype, the backend, and `backend: 'reference'`, which has the kernels)
 *   or the shape does not fit the dtype (`@kvq/cache` CacheError, e.g. an nvfp4 head size that is not a multiple of
 *   16) or the backend's kernels; never a fallback to another dtype or backend.
 */
export function checkKvDtypeOnBackend(
  backend: KernelBackend,
  dtype: KvStorageDtype,
  shape: KvProbeShape,
  requested: string = dtype,
  valueDtype: KvStorageDtype = dtype,
  field = 'kvCacheDtype',
): void {
  const mixed = valueDtype !== dtype;
  if (!mixed && !isKvQuantDtype(dtype)) return;
  try {
    const cache = new KvCacheStorage({ dtype, valueDtype, numLayers: 1, numBlocks: 2, ...shape }).layer(0);
    const width = shape.numKvHeads * shape.headSize;
    const key = Float32Array.from({ length: width }, (_, i) => ((i % 7) - 3) / 8);
    const value = Float32Array.from({ length: width }, (_, i) => ((i % 5) - 2) / 4);
    // Slot `blockSize` is block 1, offset 0 (block 0 is the manager's null block).
    backend.reshapeAndCache({ key, value, slotMapping: Int32Array.of(shape.blockSize), numTokens: 1, cache });
    probeDecode(backend, cache, Float32Array.from({ length: shape.numHeads * shape.headSize }, (_, i) => ((i % 3) - 1) / 2), shape.numHeads);
  } catch (cause) {
    if (!(cause instanceof KernelError) && !(cause instanceof CacheError)) throw cause;
    const name = mixed
      ? `${field}: K in '${dtype}' with V in '${valueDtype}'`
      : `${field} ${JSON.stringify(requested)}${requested === dtype ? '' : ` (${dtype})`}`;
    const message =
      cause instanceof KernelError && cause.code === 'UNSUPPORTED'
        ? mixed
          ? `${name} is not supported by the '${backend.name}' backend (it has no kernels for separate K and V dtypes); the reference, CPU, CUDA and ROCm backends have them, or store V like K`
          : `${name} is not supported by the '${backend.name}' backend (it has no kernels for this KV dtype yet); the reference backend supports it: pass backend: 'reference' (CLI: --backend reference), or choose an FP8 dtype such as 'fp8'`
        : `${name} cannot run on the '${backend.name}' backend with ${shape.numKvHeads} KV heads of size ${shape.headSize}: ${cause.message}`;
    throw new EngineError('INVALID_ARGUMENT', message, { field, cause });
  }
}
