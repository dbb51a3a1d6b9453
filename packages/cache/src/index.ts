/**
 * @kvq/cache: paged KV-cache bookkeeping (block pool, block tables, prefix caching, copy-on-write forks,
 * preemption, metrics), the KV storage layout with its FP8 reference write/read paths, capacity planning, and the
 * tiers beyond the pool (serialized blocks, host-memory LRU tier, the tiered store; network tiers live elsewhere).
 * Pure TypeScript; depends only on @kvq/fp8.
 * @see ../README.md
 */
export { CacheError, type CacheErrorCode } from './errors.js';
export {
  type KvStorageDtype,
  type KvPoolArray,
  type KvCacheDtypeOption,
  type ModelDtype,
  KV_STORAGE_DTYPES,
  kvArrayFor,
  bytesPerElement,
  isFp8Dtype,
  assertKvStorageDtype,
  resolveKvCacheDtype,
} from './dtype.js';
export {
  KV_QUANT_DTYPES,
  E2M1_VALUES,
  isKvQuantDtype,
  kvBlockLayout,
  quantizeKvHead,
  dequantizeKvHead,
  kvHeadScale,
  q4_0GroupScale,
  q4_0Position,
  int4F16GroupScale,
  encodeE2m1,
  decodeE2m1,
  type KvQuantDtype,
  type KvBlockLayout,
  type Q4_0Scale,
} from './kv-quant.js';
export type { KvLayerCache } from './storage/layer.js';
export {
  KvCacheStorage,
  createKvLayerCache,
  copyBlocks,
  kvPoolBlockLength,
  valuePoolShape,
  checkLayerScales,
  checkScales,
  type KvCacheStorageOptions,
  type KvLayerCacheOptions,
  type KvScaleGranularity,
  type KvScaleUpdate,
} from './storage/storage.js';
export { writeKv, gatherKv, type GatheredKv } from './storage/io.js';
export { sha256 } from './sha256.js';
export {
  BlockHasher,
  toHex,
  type BlockHash,
  type ExtraKey,
  type HashFunction,
  type KvFormatSource,
} from './hash.js';
export { KvCacheBlock, FreeBlockQueue } from './block.js';
export {
  BlockPool,
  type BlockPoolOptions,
  type KvCacheEvent,
  type BlockStoredEvent,
  type BlockRemovedEvent,
  type AllBlocksClearedEvent,
} from './block-pool.js';
export { RecentHitRate } from './metrics.js';
export {
  KvCacheManager,
  type KvCacheManagerOptions,
  type AddSequenceOptions,
  type AllocateOptions,
  type BlockCopy,
  type KvAllocation,
  type KvCacheMetrics,
  type SequenceId,
  type SequenceInfo,
  type SequenceStatus,
} from './manager.js';
export {
  planKvCache,
  maxConcurrency,
  kvBytesPerToken,
  kvBytesPerBlock,
  kvPageBytes,
  kvScaleBytes,
  type KvCachePlan,
  type KvCapacityOptions,
  type KvConcurrency,
  type KvModelConfig,
  type KvScaleSidecar,
  type PlanKvCacheOptions,
} from './plan.js';
export {
  type KvBlockFormat,
  KV_BLOCK_FORMAT_VERSION,
  crc32,
  encodeKvBlock,
  decodeKvBlock,
  kvBlockFormatOf,
  kvBlockPayloadBytes,
  readKvBlock,
  writeKvBlock,
} from './block-codec.js';
export { HostMemoryTier, type HostMemoryTierOptions, type KvBlockTier, type KvTierEntry } from './tier.js';
export {
  TieredKvStore,
  KV_TIER_FAILURES,
  tierFailureOf,
  type KvTierFailure,
  type KvTierOperation,
  type KvTierStats,
  type TieredKvStoreOptions,
} from './tiered-store.js';
