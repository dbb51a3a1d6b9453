import type { KvCacheStorage } from '@kvq/cache';
import { MIN_SCALE } from '@kvq/fp8';
import type { KernelBackend } from '@kvq/kernels';
import type { AttentionObserver } from './forward.js';

/** vLLM's `Q_SCALE_CONSTANT`, `K_SCALE_CONSTANT`, `V_SCALE_CONSTANT` (envs.py defaults). */
export const KV_SCALE_CONSTANTS = Object.freeze({ q: 200, k: 200, v: 100 });

/**
 * Divisors of `calculateKvScales` for nvfp4's per-tensor K/V scales: amax / (200 x 6), so E4M3 block scales (<= 448)
 * cover 2.24x the first pass's amax, as vLLM's FP8 divisor 200 does against 448. q is not quantized (its scale unused).
 */
export const NVFP4_KV_SCALE_CONSTANTS = Object.freeze({ q: 200, k: 1200, v: 1200 });

/**
 * `calculate_kv_scales` with vLLM's semantics: on the FIRST forward pass each layer sees, set
 * `q_scale = max|q| / 200`, `k_scale = max|k| / 200`, `v_scale = max|v| / 100` (one scalar per tensor per
 * layer, over all tokens and heads of that call), before that pass writes its K/V; then never again.
 * vLLM removed the feature in 2026-07 (PR #49389); kvq keeps it.
 * @see docs/spec/vllm-fp8-kv-cache.md section 2
 * @returns the observer, and `done()` telling whether every layer has been calibrated
 */
export function calculateKvScalesObserver(
  backend: KernelBackend,
  storage: KvCacheStorage,
  constants: { q: number; k: number; v: number } = KV_SCALE_CONSTANTS,
): { observer: AttentionObserver; done: () => boolean; scales: () => { q: number; k: number; v: number }[] } {
  const calibrated: ({ q: number; k: number; v: number } | undefined)[] = new Array(storage.numLayers).fill(undefined);
  const scale = (amax: number, divisor: number) => Math.max(Math.fround(amax / divisor), MIN_SCALE);
  const observer: AttentionObserver = (layer, t) => {
    if (calibrated[layer]) return;
    const layerCache = storage.layer(layer);
    const qLen = t.numTokens * layerCache.numKvHeads * layerCache.headSize * (storage.numHeads / storage.numKvHeads);
    const kvLen = t.numTokens * layerCache.numKvHeads * layerCache.headSize;
    const q = scale(backend.amaxTensor({ x: t.query, length: qLen }), constants.q);
    const k = scale(backend.amaxTensor({ x: t.key, length: kvLen }), constants.k);
    const v = scale(backend.amaxTensor({ x: t.value, length: kvLen }), constants.v);
    storage.setScales(layer, { qScale: q, kScale: k, vScale: v });
    calibrated[layer] = { q, k, v };
  };
  return {
    observer,
    done: () => calibrated.every((c) => c !== undefined),
    scales: () => calibrated.map((c) => c ?? { q: 1, k: 1, v: 1 }),
  };
}
