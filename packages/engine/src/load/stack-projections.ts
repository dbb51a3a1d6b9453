/**
 * After loading: each layer's projections that read the same input (q/k/v, gate/up) moved into one stacked array
 * per group, the tensors becoming row views of it (`@kvq/kernels` `stackWeightRows`: the stored bytes copied once,
 * never dequantized), so the forward pass can run each group as one matrix (`joinWeightRows`) with no second copy.
 * @module
 */
import { joinWeightRows, stackWeightRows } from '@kvq/kernels';
import { asWeightMatrix, type Tensor } from '../tensor.js';
import type { LayerWeights, ModelWeights } from '../weights/model-weights.js';

/** Whether the tensors take their activations alike (the same W8A8 int8 rule, or none). */
function sameActivations(parts: readonly Tensor[]): boolean {
  const a = parts[0]!.int8Activations;
  return parts.every((t) => (t.int8Activations === undefined) === (a === undefined) && t.int8Activations?.staticScale === a?.staticScale);
}

/** `parts` as row views of one stacked array, or the same tensors when they cannot share one. */
function stackTensors(parts: readonly Tensor[]): Tensor[] {
  if (!sameActivations(parts) || parts.some((t) => t.shape.length !== 2)) return [...parts];
  const matrices = parts.map((t) => asWeightMatrix(t));
  if (joinWeightRows(matrices)) return [...parts]; // already views of one array (a checkpoint's fused qkv, split)
  const s = stackWeightRows(matrices);
  if (!s) return [...parts];
  return parts.map((t, i) => {
    const v = s.views[i]!;
    return { ...t, data: v.data, ...(v.scale ? { scale: v.scale } : {}), ...(v.zeroPoint ? { zeroPoint: v.zeroPoint } : {}) };
  });
}

/**
 * `weights` with every layer's q/k/v and gate/up tensors stacked (see the module comment); a group whose tensors differ
 * in dtype, width, group size, scale layout (a per-tensor scale) or activation rule stays as it was. The tensors'
 * values, shapes and other fields are unchanged.
 */
export function stackLayerProjections(weights: ModelWeights): ModelWeights {
  const layers = weights.layers.map((l): LayerWeights => {
    const [q, k, v] = stackTensors([l.q, l.k, l.v]);
    const [gate, up] = stackTensors([l.gate, l.up]);
    return { ...l, q: q!, k: k!, v: v!, gate: gate!, up: up! };
  });
  return { ...weights, layers };
}
