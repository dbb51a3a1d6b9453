/**
 * A layer's projections that read the same input, run as one matrix in decode steps: q/k/v (with their biases) and
 * gate/up. The loader leaves each group's weights as row views of one array (`load/stack-projections.ts`), so the
 * stacked matrix is a view too (`@kvq/kernels` `joinWeightRows`): one `linear` call streams the group's weights in one
 * pass instead of two or three short ones (each with a call's fixed costs: the 256-row k/v GEMVs of a 768-wide model
 * ran at a third of the bandwidth the 2048-row ones reach).
 * @module
 */
import { joinWeightRows, type WeightMatrix } from '@kvq/kernels';
import { int8ActivationsOf, setInt8Activations } from '../tensor.js';
import type { LlamaLayerWeights } from './forward.js';

/**
 * Decode steps of at most this many rows run the stacked matrices (the GEMV path of the CPU kernels); longer steps
 * (prefill, GEMM) run the separate projections, where a call's fixed costs are small against the work and the
 * outputs need no separating copy.
 */
export const STACKED_MAX_ROWS = 4;

/** One layer's stacked projections (either may be absent: its weights are not views of one array). */
export interface StackedProjections {
  /** q, k and v rows stacked `[qDim + 2 kvDim, hidden]`. */
  readonly qkv?: WeightMatrix | undefined;
  /** Their biases, concatenated, when the layer has them. */
  readonly qkvBias?: Float32Array | undefined;
  /** gate and up rows stacked `[2 intermediate, hidden]`. */
  readonly gateUp?: WeightMatrix | undefined;
}

/** `parts` as one matrix (no copy) when they are row views of one array and take their activations alike. */
function join(parts: readonly WeightMatrix[]): WeightMatrix | undefined {
  const a = int8ActivationsOf(parts[0]!);
  if (parts.some((w) => (int8ActivationsOf(w) === undefined) !== (a === undefined) || int8ActivationsOf(w)?.staticScale !== a?.staticScale)) return undefined;
  const joined = joinWeightRows(parts);
  if (joined) setInt8Activations(joined, a);
  return joined;
}

/** The stacked projections of a layer (see the module comment). */
export function stackedProjectionsOf(lw: LlamaLayerWeights): StackedProjections {
  const biases = [lw.qBias, lw.kBias, lw.vBias];
  const someBias = biases.some((b) => b !== undefined);
  // Biases in some of q/k/v only: not stacked (a zero bias would need a copy of its own).
  const qkv = someBias && !biases.every((b) => b !== undefined) ? undefined : join([lw.qProj, lw.kProj, lw.vProj]);
  let qkvBias: Float32Array | undefined;
  if (qkv && someBias) {
    qkvBias = new Float32Array(qkv.rows);
    qkvBias.set(lw.qBias!, 0);
    qkvBias.set(lw.kBias!, lw.qProj.rows);
    qkvBias.set(lw.vBias!, lw.qProj.rows + lw.kProj.rows);
  }
  return { qkv, qkvBias, gateUp: join([lw.gateProj, lw.upProj]) };
}

/**
 * Copies the `rows` rows of a stacked output `[rows, sum of widths]` apart into `outs[i]` `[rows, widths[i]]` (steps of
 * more than one row; one row's parts are views of the output instead).
 */
export function splitRows(stacked: Float32Array, rows: number, widths: readonly number[], outs: readonly Float32Array[]): void {
  const total = widths.reduce((a, b) => a + b, 0);
  for (let r = 0; r < rows; r++) {
    let offset = r * total;
    for (let i = 0; i < widths.length; i++) {
      const w = widths[i]!;
      outs[i]!.set(stacked.subarray(offset, offset + w), r * w);
      offset += w;
    }
  }
}
