/**
 * Quantizers to the GGML block types, one block at a time.
 *
 * - `q8_0`, `q4_0`, `q4_1`, `q5_0`, `q5_1`: ggml's reference round-to-nearest, written so every float32 step
 *   matches gguf-py's numpy `quantize_blocks` bit for bit (tested against its vectors).
 * - `q4_k`, `q5_k`, `q6_k`: our own range-covering search (NOT llama.cpp's `make_qkx2_quants` / `make_qx_quants`):
 *   every sub-block's 6-bit (K4/K5) or int8 (Q6) scale index is rounded UP against the f16 super-block scale, so
 *   no weight is ever clipped and `|x - deq(q(x))| <= step / 2` (plus float32 rounding) holds for every weight,
 *   where `step` is the sub-block's effective scale. llama.cpp instead minimizes a weighted squared error over
 *   candidate scales, which may clip outliers (lower RMSE on Gaussian weights, no max-error bound).
 * @see docs/spec/quantized-weights.md
 * @module
 */
import { f16ToF32Table, f32ToF16Bits } from '@kvq/fp8';
import type { GgmlWeightDtype } from '../contract.js';
import { KernelError } from '../errors.js';
import { GGML_BLOCK } from './layout.js';

const fr = Math.fround;

function putHalf(out: Uint8Array, o: number, bits: number): void {
  out[o] = bits & 0xff;
  out[o + 1] = bits >>> 8;
}

/** f16 bits of `v` (RNE), throwing when the result is not finite (a block scale too large for f16). */
function halfBits(v: number, what: string, row: number, block: number): number {
  const h = f32ToF16Bits(v);
  if ((h & 0x7c00) === 0x7c00) {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `values: row ${row}, block ${block}: the ${what} ${v} does not fit an f16 (|value| must stay below 65520 x the format's levels)`,
      { argument: 'values' },
    );
  }
  return h;
}

/** Smallest f16 (as bits) whose value is `>= v` (`v >= 0`, finite). */
function halfBitsUp(v: number, what: string, row: number, block: number): number {
  let h = halfBits(v, what, row, block);
  if (f16ToF32Table()[h]! < v) h++;
  if ((h & 0x7c00) === 0x7c00) return halfBits(Infinity, what, row, block);
  return h;
}

// Scratch buffers reused by every block (the quantizers are synchronous and not re-entrant).
const qScratch = new Uint8Array(256);
const loS = new Float64Array(16);
const hiS = new Float64Array(16);
const needS = new Float64Array(16);
const mlS = new Float64Array(8);
const scS = new Uint8Array(8);
const miS = new Uint8Array(8);

/** Round half away from zero (gguf-py `np_roundf`, C `roundf`). */
function roundAway(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

function quantQ8_0(x: Float32Array, xo: number, out: Uint8Array, o: number, row: number, block: number): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[xo + j]!));
  const d = fr(amax / 127);
  const id = d === 0 ? 0 : fr(1 / d);
  putHalf(out, o, halfBits(d, 'scale d', row, block));
  for (let j = 0; j < 32; j++) out[o + 2 + j] = roundAway(fr(x[xo + j]! * id)) & 0xff;
}

/** q4_0 / q5_0: `d = max / -levels` (max = the signed value of largest magnitude, first one on ties). */
function quantSym(
  x: Float32Array,
  xo: number,
  out: Uint8Array,
  o: number,
  bits: 4 | 5,
  row: number,
  block: number,
): void {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j]!;
    if (Math.abs(v) > amax || j === 0) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const levels = bits === 4 ? 8 : 16;
  const top = bits === 4 ? 15 : 31;
  const d = fr(max / -levels);
  const id = d === 0 ? 0 : fr(1 / d);
  putHalf(out, o, halfBits(d, 'scale d', row, block));
  // gguf-py: trunc(float32(float64(x) * float64(id) + (levels + 0.5))), then clip.
  const q = qScratch;
  for (let j = 0; j < 32; j++) q[j] = Math.min(top, Math.trunc(fr(x[xo + j]! * id + (levels + 0.5))));
  packLegacy(q, out, o + 2, bits);
}

/** q4_1 / q5_1: `d = (max - min) / levels`, `m = min`. */
function quantAsym(
  x: Float32Array,
  xo: number,
  out: Uint8Array,
  o: number,
  bits: 4 | 5,
  row: number,
  block: number,
): void {
  let min = Infinity;
  let max = -Infinity;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const top = bits === 4 ? 15 : 31;
  const d = fr(fr(max - min) / top);
  const id = d === 0 ? 0 : fr(1 / d);
  putHalf(out, o, halfBits(d, 'scale d', row, block));
  putHalf(out, o + 2, halfBits(min, 'minimum m', row, block));
  const q = qScratch;
  for (let j = 0; j < 32; j++) q[j] = Math.min(top, Math.trunc(fr(fr(fr(x[xo + j]! - min) * id) + 0.5)));
  packLegacy(q, out, o + 4, bits);
}

/** Pack 32 quants: optional 4 bytes of 5th bits (bit j = element j), then 16 bytes (j low nibble, j + 16 high). */
function packLegacy(q: Uint8Array, out: Uint8Array, o: number, bits: 4 | 5): void {
  let qs = o;
  if (bits === 5) {
    let qh = 0;
    for (let j = 0; j < 32; j++) qh |= ((q[j]! >> 4) & 1) << j;
    out[o] = qh & 0xff;
    out[o + 1] = (qh >>> 8) & 0xff;
    out[o + 2] = (qh >>> 16) & 0xff;
    out[o + 3] = (qh >>> 24) & 0xff;
    qs = o + 4;
  }
  for (let j = 0; j < 16; j++) out[qs + j] = (q[j]! & 0x0f) | ((q[j + 16]! & 0x0f) << 4);
}

/**
 * Smallest index `k` in `[0, kMax]` with `fround(scale * k) * mult >= need` (so a step of `fround(scale * k)`
 * covers `need`), `kMax` if none does. `scale > 0`.
 */
function coverIndex(need: number, scale: number, mult: number, kMax: number): number {
  if (need <= 0) return 0;
  let k = Math.min(kMax, Math.max(0, Math.ceil(need / (scale * mult))));
  while (k < kMax && fr(scale * k) * mult < need) k++;
  return k;
}

/** q4_k (levels 15) / q5_k (levels 31): 8 sub-blocks of 32, `x ~ dl * q - ml`, 6-bit scale and min indices. */
function quantK45(x: Float32Array, xo: number, out: Uint8Array, o: number, five: boolean, row: number, block: number): void {
  const f16 = f16ToF32Table();
  const top = five ? 31 : 15;
  const lo = loS;
  const hi = hiS;
  let maxMin = 0;
  for (let s = 0; s < 8; s++) {
    let mn = 0;
    let mx = -Infinity;
    for (let l = 0; l < 32; l++) {
      const v = x[xo + 32 * s + l]!;
      if (v < mn) mn = v;
      if (v > mx) mx = v;
    }
    lo[s] = mn; // <= 0: the min is stored as a non-negative offset
    hi[s] = mx;
    maxMin = Math.max(maxMin, -mn);
  }
  const dminBits = halfBitsUp(maxMin / 63, 'super-block min scale dmin', row, block);
  const dmin = f16[dminBits]!;
  const sc = scS;
  const mi = miS;
  const ml = mlS;
  let maxNeed = 0;
  const need = needS;
  for (let s = 0; s < 8; s++) {
    mi[s] = dmin === 0 ? 0 : coverIndex(-lo[s]!, dmin, 1, 63);
    ml[s] = fr(dmin * mi[s]!);
    need[s] = Math.max(0, hi[s]! + ml[s]!);
    maxNeed = Math.max(maxNeed, need[s]! / top);
  }
  const dBits = halfBitsUp(maxNeed / 63, 'super-block scale d', row, block);
  const d = f16[dBits]!;
  const q = qScratch;
  for (let s = 0; s < 8; s++) {
    sc[s] = d === 0 ? 0 : coverIndex(need[s]!, d, top, 63);
    const dl = fr(d * sc[s]!);
    for (let l = 0; l < 32; l++) {
      const v = x[xo + 32 * s + l]! + ml[s]!;
      q[32 * s + l] = dl === 0 ? 0 : Math.max(0, Math.min(top, Math.round(v / dl)));
    }
  }
  putHalf(out, o, dBits);
  putHalf(out, o + 2, dminBits);
  const scales = o + 4;
  for (let j = 0; j < 4; j++) {
    out[scales + j] = (sc[j]! & 63) | ((sc[j + 4]! >> 4) << 6);
    out[scales + j + 4] = (mi[j]! & 63) | ((mi[j + 4]! >> 4) << 6);
    out[scales + j + 8] = (sc[j + 4]! & 0x0f) | ((mi[j + 4]! & 0x0f) << 4);
  }
  const qh = o + 16;
  const qs = five ? o + 48 : o + 16;
  if (five) out.fill(0, qh, qh + 32);
  for (let c = 0; c < 4; c++) {
    for (let l = 0; l < 32; l++) {
      const a = q[64 * c + l]!;
      const b = q[64 * c + 32 + l]!;
      out[qs + 32 * c + l] = (a & 0x0f) | ((b & 0x0f) << 4);
    }
  }
  if (five) {
    for (let s = 0; s < 8; s++) for (let l = 0; l < 32; l++) out[qh + l]! |= ((q[32 * s + l]! >> 4) & 1) << s;
  }
}

/** q6_k: 16 sub-blocks of 16, `x ~ dl * q` with `q` in [-32, 31], int8 sub-block scales, f16 `d`. */
function quantQ6K(x: Float32Array, xo: number, out: Uint8Array, o: number, row: number, block: number): void {
  const f16 = f16ToF32Table();
  const need = needS;
  let maxNeed = 0;
  for (let s = 0; s < 16; s++) {
    let n = 0;
    for (let l = 0; l < 16; l++) {
      const v = x[xo + 16 * s + l]!;
      n = Math.max(n, v > 0 ? v / 31 : -v / 32);
    }
    need[s] = n;
    maxNeed = Math.max(maxNeed, n);
  }
  const dBits = halfBitsUp(maxNeed / 127, 'super-block scale d', row, block);
  const d = f16[dBits]!;
  const q = qScratch; // q + 32, in [0, 63]
  for (let s = 0; s < 16; s++) {
    // The step must satisfy step * 31 >= max and step * 32 >= -min: cover `need` first, then re-check in float32.
    let k = d === 0 ? 0 : coverIndex(need[s]!, d, 1, 127);
    if (d !== 0) {
      for (let l = 0; l < 16; l++) {
        const v = x[xo + 16 * s + l]!;
        while (k < 127 && (v > fr(d * k) * 31 || -v > fr(d * k) * 32)) k++;
      }
    }
    out[o + 192 + s] = k;
    const dl = fr(d * k);
    for (let l = 0; l < 16; l++) {
      const v = x[xo + 16 * s + l]!;
      q[16 * s + l] = dl === 0 ? 32 : Math.max(-32, Math.min(31, Math.round(v / dl))) + 32;
    }
  }
  out.fill(0, o, o + 192);
  for (let h = 0; h < 2; h++) {
    for (let k = 0; k < 4; k++) {
      const lowBase = o + 64 * h + 32 * (k & 1);
      const lowShift = k >= 2 ? 4 : 0;
      for (let l = 0; l < 32; l++) {
        const v = q[128 * h + 32 * k + l]!;
        out[lowBase + l]! |= (v & 0x0f) << lowShift;
        out[o + 128 + 32 * h + l]! |= ((v >> 4) & 3) << (2 * k);
      }
    }
  }
  putHalf(out, o + 208, dBits);
}

/**
 * Quantize `rows` rows of `cols` float32 values (row-major in `x`) to GGML blocks, rows contiguous, into a new
 * `Uint8Array` of `rows * cols / blockElems * blockBytes` bytes. `cols` must be a multiple of the block size and
 * every value finite (checked by the caller, `quantizeMatrix`).
 */
export function quantizeGgml(x: Float32Array, rows: number, cols: number, dtype: GgmlWeightDtype): Uint8Array {
  const { blockElems, blockBytes } = GGML_BLOCK[dtype];
  const nb = cols / blockElems;
  const out = new Uint8Array(rows * nb * blockBytes);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < nb; k++) {
      const xo = r * cols + k * blockElems;
      const o = (r * nb + k) * blockBytes;
      switch (dtype) {
        case 'q8_0':
          quantQ8_0(x, xo, out, o, r, k);
          break;
        case 'q4_0':
          quantSym(x, xo, out, o, 4, r, k);
          break;
        case 'q5_0':
          quantSym(x, xo, out, o, 5, r, k);
          break;
        case 'q4_1':
          quantAsym(x, xo, out, o, 4, r, k);
          break;
        case 'q5_1':
          quantAsym(x, xo, out, o, 5, r, k);
          break;
        case 'q4_k':
          quantK45(x, xo, out, o, false, r, k);
          break;
        case 'q5_k':
          quantK45(x, xo, out, o, true, r, k);
          break;
        case 'q6_k':
          quantQ6K(x, xo, out, o, r, k);
          break;
      }
    }
  }
  return out;
}
