import { EngineError } from '../errors.js';

/**
 * How K and V are rotated before they are written to the KV cache (`kvCacheRotation`, CLI `--kv-cache-rotation`):
 * `'none'` (default) or `'hadamard'`, a randomized orthonormal Walsh-Hadamard transform per head (docs/kv-rotation.md).
 */
export type KvCacheRotation = 'none' | 'hadamard';

/** The values `kvCacheRotation` accepts. */
export const KV_CACHE_ROTATIONS: readonly KvCacheRotation[] = ['none', 'hadamard'];

/** Smallest Walsh-Hadamard block worth rotating with: below 8 values it barely spreads an outlier. */
const MIN_BLOCK = 8;

/** Seed of the fixed sign pattern (the same in every process, so shared KV blocks mean the same thing everywhere). */
const SIGN_SEED = 0x6b7671; // "kvq"

/**
 * The randomized Hadamard rotation of one head vector, `R = H·D`: `D` flips the signs of a fixed pseudo-random half
 * of the `headSize` values, `H` is the orthonormal Walsh-Hadamard matrix (entries `±1/sqrt(B)`) applied to each block
 * of `B` consecutive values, `B` the largest power of two dividing `headSize` (the whole head for 64, 128, 256).
 * `R` is orthonormal, so rotating q and k leaves every score `q·k` unchanged, and an attention output computed from
 * rotated values `R·v` is rotated back by `R^T = D·H`. Cost per vector: `headSize · log2(B)` additions.
 *
 * The rotated values spread a few large channels over the whole block, which is what a quantizer with one scale per
 * token and head (or per group) wants; the transform itself is exact up to float32 rounding (~1e-7 relative).
 */
export class KvHadamardRotation {
  /** Values per head. */
  readonly headSize: number;
  /** Walsh-Hadamard block size `B`, a power of two dividing `headSize`. */
  readonly block: number;
  /** `D / sqrt(B)`: the signs with the normalization folded in. */
  private readonly scaledSigns: Float32Array;

  /**
   * @param headSize values per head
   * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheRotation`) when `headSize` has no power-of-two factor >= 8
   */
  constructor(headSize: number) {
    const block = headSize > 0 && Number.isInteger(headSize) ? headSize & -headSize : 0;
    if (block < MIN_BLOCK) {
      throw new EngineError(
        'INVALID_ARGUMENT',
        `kvCacheRotation 'hadamard' needs a head size with a power-of-two factor >= ${MIN_BLOCK} (the Walsh-Hadamard block); this model's head size is ${headSize}`,
        { field: 'kvCacheRotation' },
      );
    }
    this.headSize = headSize;
    this.block = block;
    this.scaledSigns = new Float32Array(headSize);
    const norm = 1 / Math.sqrt(block);
    let s = SIGN_SEED;
    for (let i = 0; i < headSize; i++) {
      // xorshift32: a fixed, well-mixed sign sequence (not a secret; any fixed pattern works, structure-free is better).
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      this.scaledSigns[i] = (s & 1) === 0 ? norm : -norm;
    }
  }

  /** `x := R·x` for `count` consecutive head vectors of `x` (in place). */
  rotate(x: Float32Array, count: number): void {
    const { headSize, scaledSigns } = this;
    for (let v = 0, base = 0; v < count; v++, base += headSize) {
      for (let i = 0; i < headSize; i++) x[base + i]! *= scaledSigns[i]!;
      this.walshHadamard(x, base);
    }
  }

  /** `x := R^T·x` for `count` consecutive head vectors of `x` (in place): undoes {@link rotate}. */
  unrotate(x: Float32Array, count: number): void {
    const { headSize, scaledSigns } = this;
    for (let v = 0, base = 0; v < count; v++, base += headSize) {
      this.walshHadamard(x, base);
      for (let i = 0; i < headSize; i++) x[base + i]! *= scaledSigns[i]!;
    }
  }

  /** Unnormalized fast Walsh-Hadamard transform of each block of one head vector starting at `base`. */
  private walshHadamard(x: Float32Array, base: number): void {
    const { headSize, block } = this;
    for (let start = base; start < base + headSize; start += block) {
      for (let h = 1; h < block; h <<= 1) {
        for (let i = start; i < start + block; i += h << 1) {
          for (let j = i; j < i + h; j++) {
            const a = x[j]!;
            const b = x[j + h]!;
            x[j] = a + b;
            x[j + h] = a - b;
          }
        }
      }
    }
  }
}

/**
 * Validates a `kvCacheRotation` option and builds the rotation for a model's head size.
 * @returns undefined for `'none'` (and when the option is absent)
 * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheRotation`) for another value or an unrotatable head size
 */
export function kvRotationFor(option: unknown, headSize: number): KvHadamardRotation | undefined {
  return checkKvCacheRotation(option) === 'hadamard' ? new KvHadamardRotation(headSize) : undefined;
}

/**
 * Validates a `kvCacheRotation` option (absent means `'none'`).
 * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheRotation`) naming the value and the choices
 */
export function checkKvCacheRotation(option: unknown): KvCacheRotation {
  if (option === undefined) return 'none';
  if (!KV_CACHE_ROTATIONS.includes(option as KvCacheRotation)) {
    throw new EngineError('INVALID_ARGUMENT', `kvCacheRotation must be one of ${KV_CACHE_ROTATIONS.join(', ')}, got ${JSON.stringify(option)}`, { field: 'kvCacheRotation' });
  }
  return option as KvCacheRotation;
}
