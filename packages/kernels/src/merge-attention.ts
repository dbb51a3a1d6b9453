/**
 * Combining attention computed over disjoint key sets (vLLM `merge_attn_states`, cascade attention): each part
 * gives its normalized output and the log-sum-exp of its scores (`PagedAttentionArgs.lse`), and the union's
 * attention is their softmax-weighted mix.
 * @module
 */
import { KernelError } from './errors.js';
import { checkF32, checkNoOverlap } from './validate.js';

/** Arguments of {@link mergeAttentionStates}. Arrays are host float32, `[numRows, headSize]` and `[numRows]`. */
export interface MergeAttentionArgs {
  /** Output of part A `[numRows, headSize]` (rows = tokens x query heads). */
  readonly outA: Float32Array;
  /** Log-sum-exp of part A's scores `[numRows]`; `-Infinity` = part A attends no key in that row. */
  readonly lseA: Float32Array;
  /** Output of part B, same shape as `outA`. */
  readonly outB: Float32Array;
  /** Log-sum-exp of part B `[numRows]`. */
  readonly lseB: Float32Array;
  /** Merged output `[numRows, headSize]`; may be `outA` or `outB` exactly (in place). */
  readonly out: Float32Array;
  /** Merged log-sum-exp `[numRows]` (optional output); may be `lseA` or `lseB` exactly. */
  readonly lse?: Float32Array | undefined;
  /** Rows (tokens x query heads), `>= 0`. */
  readonly numRows: number;
  /** Elements per row (head size), `>= 1`. */
  readonly headSize: number;
}

/**
 * `out = (outA * e^(lseA - M) + outB * e^(lseB - M)) / (e^(lseA - M) + e^(lseB - M))`, `M = max(lseA, lseB)`,
 * per row, in float64; `lse = M + ln(e^(lseA - M) + e^(lseB - M))`. A part with `lse = -Infinity` has weight 0;
 * a row where both are `-Infinity` attends nothing: output 0 and lse `-Infinity`. NaN propagates.
 * @throws KernelError `WRONG_ARRAY_TYPE` / `SHAPE_MISMATCH` / `INVALID_ARGUMENT` (sizes, partial overlaps)
 */
export function mergeAttentionStates(args: MergeAttentionArgs): void {
  const { numRows, headSize } = args;
  if (!Number.isInteger(numRows) || numRows < 0) {
    throw new KernelError('INVALID_ARGUMENT', `numRows must be an integer >= 0, got ${String(numRows)}`, { argument: 'numRows' });
  }
  if (!Number.isInteger(headSize) || headSize < 1) {
    throw new KernelError('INVALID_ARGUMENT', `headSize must be an integer >= 1, got ${String(headSize)}`, { argument: 'headSize' });
  }
  const n = numRows * headSize;
  const outA = checkF32('outA', args.outA, n);
  const outB = checkF32('outB', args.outB, n);
  const out = checkF32('out', args.out, n);
  const lseA = checkF32('lseA', args.lseA, numRows);
  const lseB = checkF32('lseB', args.lseB, numRows);
  checkNoOverlap('out', out, n, 'outA', outA, n, true);
  checkNoOverlap('out', out, n, 'outB', outB, n, true);
  const lse = args.lse === undefined ? undefined : checkF32('lse', args.lse, numRows);
  if (lse) {
    checkNoOverlap('lse', lse, numRows, 'lseA', lseA, numRows, true);
    checkNoOverlap('lse', lse, numRows, 'lseB', lseB, numRows, true);
  }
  for (let r = 0; r < numRows; r++) {
    const a = lseA[r]!;
    const b = lseB[r]!;
    const base = r * headSize;
    if (a === -Infinity && b === -Infinity) {
      out.fill(0, base, base + headSize);
      if (lse) lse[r] = -Infinity;
      continue;
    }
    const m = a > b ? a : b;
    const wa = a === -Infinity ? 0 : Math.exp(a - m);
    const wb = b === -Infinity ? 0 : Math.exp(b - m);
    const sum = wa + wb;
    const fa = wa / sum;
    const fb = wb / sum;
    for (let d = base; d < base + headSize; d++) {
      // A zero-weight part contributes nothing (even if its output row is uninitialized or NaN).
      const x = fa === 0 ? 0 : outA[d]! * fa;
      const y = fb === 0 ? 0 : outB[d]! * fb;
      out[d] = x + y;
    }
    if (lse) lse[r] = m + Math.log(sum);
  }
}
