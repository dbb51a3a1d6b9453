import { sha256, toHex } from '@kvq/cache';
import type { LoadedModel } from '../load/types.js';
import type { Tensor } from '../tensor.js';

const SAMPLE_BYTES = 4096;
const encoder = new TextEncoder();

function tensorsOf(model: LoadedModel): Tensor[] {
  const w = model.weights;
  const out: Tensor[] = [w.embedTokens, w.finalNorm, w.lmHead];
  for (const l of w.layers) for (const t of Object.values(l)) if (t !== undefined) out.push(t as Tensor);
  return out;
}

/**
 * A short identifier of a loaded model for KV blocks shared between processes (the tiers' block header and the root
 * of their block hashes): SHA-256 over the configuration and, for every weight tensor, its dtype, shape, byte length
 * and first and last 4 KiB (and W8A8's activation mode). Two replicas that loaded the same files get the same fingerprint wherever the files
 * live; another model, another quantization or other weights get another one. Cost: reads ~8 KiB per tensor.
 * @param variant what else changes the meaning of the model's KV blocks (e.g. `'kv-rotation:hadamard'`); default none
 * @returns 32 lowercase hex characters
 */
export function modelFingerprint(model: LoadedModel, variant?: string): string {
  const config = JSON.stringify(model.config, (_k, v: unknown) => (ArrayBuffer.isView(v) ? `${v.constructor.name}(${(v as unknown as { length: number }).length})` : v));
  const parts: Uint8Array[] = [encoder.encode(`kvq-model/1\u0000${model.format}\u0000${config}${variant === undefined ? '' : `\u0000${variant}`}`)];
  for (const t of tensorsOf(model)) {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    parts.push(encoder.encode(`\u0000${t.dtype}:${t.shape.join('x')}:${bytes.length}:`));
    parts.push(bytes.subarray(0, SAMPLE_BYTES), bytes.subarray(Math.max(SAMPLE_BYTES, bytes.length - SAMPLE_BYTES)));
    for (const extra of [t.scale, t.zeroPoint, t.inputScale]) {
      if (extra) parts.push(new Uint8Array(extra.buffer, extra.byteOffset, Math.min(extra.byteLength, SAMPLE_BYTES)));
    }
    // W8A8: int8 activations change every K/V the layer feeds (absent: the bytes of other models stay as they were).
    if (t.int8Activations) parts.push(encoder.encode(`:int8-activations:${t.int8Activations.staticScale ?? 'dynamic'}`));
  }
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return toHex(sha256(all)).slice(0, 32);
}
