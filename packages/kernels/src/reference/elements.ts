/**
 * Element decoders of the reference backend's dense KV pools (f32, bf16, f16, FP8 codes).
 * @module
 */
import { f16ToF32Table, fp8DecodeTable, type Fp8Format } from '@kvq/fp8';
import type { KvLayerCache } from '../contract.js';

let bf16Table: Float32Array | undefined;

/** Float32 value of every bf16 bit pattern (65536 entries, built once). */
function bf16ToF32Table(): Float32Array {
  if (bf16Table) return bf16Table;
  const t = new Float32Array(65536);
  const bits = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) bits[h] = h << 16;
  bf16Table = t;
  return t;
}

/**
 * Element decoder for a stored dense dtype: returns a function mapping an element of `data` at index `i` to its
 * float32 value (no scale applied).
 */
export function elementReader(dtype: KvLayerCache['dtype'], data: Float32Array | Uint16Array | Uint8Array): (i: number) => number {
  if (dtype === 'f32') return (i) => data[i]!;
  const table = dtype === 'bf16' ? bf16ToF32Table() : dtype === 'f16' ? f16ToF32Table() : fp8DecodeTable(dtype as Fp8Format);
  return (i) => table[data[i]!]!;
}

/** The per-head scale of a cache (length 1 = shared). */
export function scaleOf(scales: Float32Array, head: number): number {
  return scales.length === 1 ? scales[0]! : scales[head]!;
}
