import type { Fp8Format } from '@kvq/fp8';

import type { CheckpointFlavor } from './formats.js';
import { readCheckpointScales } from './read.js';
import { writeCheckpoint, type WeightLinkMode, type WriteCheckpointResult } from './write.js';

/** Options of {@link convertCheckpoint}. */
export interface ConvertCheckpointOptions {
  /** A Hugging Face folder with KV scales in any layout {@link readCheckpointScales} reads. */
  readonly model: string;
  /** The folder to create. */
  readonly out: string;
  /** Target layout. Default `'compressed-tensors'`. */
  readonly flavor?: CheckpointFlavor;
  /** See `WriteCheckpointOptions.scaleFormat`. */
  readonly scaleFormat?: Fp8Format;
  readonly overwrite?: boolean;
  readonly linkWeights?: WeightLinkMode;
  readonly signal?: AbortSignal;
}

/**
 * Re-write a checkpoint's KV scales in another layout (e.g. vLLM's legacy `kv_cache_scales.json` or ModelOpt names
 * → compressed-tensors, which vLLM and kvq load): the scales as stored are read, the old scale tensors dropped, the
 * weights linked. Per-head scales can only go to compressed-tensors.
 * @throws everything {@link readCheckpointScales} and {@link writeCheckpoint} throw
 */
export async function convertCheckpoint(options: ConvertCheckpointOptions): Promise<WriteCheckpointResult> {
  const read = await readCheckpointScales(options.model);
  return writeCheckpoint({
    model: options.model,
    out: options.out,
    scales: read.scales,
    flavor: options.flavor ?? 'compressed-tensors',
    ...(options.scaleFormat ? { scaleFormat: options.scaleFormat } : {}),
    ...(read.provenance ? { provenance: read.provenance } : {}),
    ...(read.checkpoint.scheme?.observer ? { observer: read.checkpoint.scheme.observer } : {}),
    ...(options.overwrite !== undefined ? { overwrite: options.overwrite } : {}),
    ...(options.linkWeights ? { linkWeights: options.linkWeights } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
}
