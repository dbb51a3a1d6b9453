import type { ModelConfig } from '../config/model-config.js';
import { EngineError } from '../errors.js';
import { asWeightMatrix, isDenseDType, quantizedRowBytes, type Tensor, type WeightMatrix } from '../tensor.js';

/**
 * Weights of one decoder layer, Hugging Face orientation (`[out, in]` row-major) and rotate-half Q/K row order.
 * Shapes: q `[numHeads*headDim, hidden]`, k/v `[numKvHeads*headDim, hidden]`, o `[hidden, numHeads*headDim]`,
 * gate/up `[intermediate, hidden]`, down `[hidden, intermediate]`, norms and biases 1-D.
 */
export interface LayerWeights {
  readonly inputNorm: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  readonly o: Tensor;
  /** Present iff `config.attentionBias`. */
  readonly qBias?: Tensor;
  readonly kBias?: Tensor;
  readonly vBias?: Tensor;
  /** Present iff `config.attentionOutputBias`. */
  readonly oBias?: Tensor;
  /** `post_attention_layernorm`: before the MLP (Llama), or on the attention output (Gemma `sandwichNorms`). */
  readonly postAttentionNorm: Tensor;
  readonly gate: Tensor;
  readonly up: Tensor;
  readonly down: Tensor;
  /** `self_attn.q_norm` / `k_norm` `[headDim]`, present iff `config.qkNorm` (Qwen3, Gemma 3). */
  readonly qNorm?: Tensor;
  readonly kNorm?: Tensor;
  /** `pre_feedforward_layernorm` / `post_feedforward_layernorm` `[hidden]`, present iff `config.sandwichNorms` (Gemma). */
  readonly preFeedforwardNorm?: Tensor;
  readonly postFeedforwardNorm?: Tensor;
}

/** All weights of a model. With tied embeddings `lmHead === embedTokens` (same object, no copy). */
export interface ModelWeights {
  /** `[vocab, hidden]`. */
  readonly embedTokens: Tensor;
  readonly layers: readonly LayerWeights[];
  /** `[hidden]`. */
  readonly finalNorm: Tensor;
  /** `[vocab, hidden]`. */
  readonly lmHead: Tensor;
}

/** The matrices of a layer as kernel-contract {@link WeightMatrix} views (no copies). */
export interface LayerMatrices {
  readonly q: WeightMatrix;
  readonly k: WeightMatrix;
  readonly v: WeightMatrix;
  readonly o: WeightMatrix;
  readonly gate: WeightMatrix;
  readonly up: WeightMatrix;
  readonly down: WeightMatrix;
}

/** {@link WeightMatrix} views of a layer's projections (shares data with the tensors). */
export function layerMatrices(layer: LayerWeights): LayerMatrices {
  return {
    q: asWeightMatrix(layer.q, 'q'),
    k: asWeightMatrix(layer.k, 'k'),
    v: asWeightMatrix(layer.v, 'v'),
    o: asWeightMatrix(layer.o, 'o'),
    gate: asWeightMatrix(layer.gate, 'gate'),
    up: asWeightMatrix(layer.up, 'up'),
    down: asWeightMatrix(layer.down, 'down'),
  };
}

/**
 * Which {@link LayerWeights} field a per-layer HF tensor fills; `qkv` / `gateUp` are Phi-3's fused tensors, split
 * into `q`/`k`/`v` and `gate`/`up` row views by {@link assembleWeights}.
 */
type LayerSlot = keyof LayerWeights | 'qkv' | 'gateUp';

/** One tensor a model of a given config needs, by Hugging Face name. */
export interface ExpectedTensor {
  readonly name: string;
  readonly shape: readonly number[];
  /** `undefined` for model-level tensors. */
  readonly layer: number | undefined;
  readonly slot: LayerSlot | 'embedTokens' | 'finalNorm' | 'lmHead';
}

/**
 * The Hugging Face tensor names and shapes a config requires (`lm_head.weight` only when embeddings are untied).
 */
export function expectedHfTensors(config: ModelConfig): ExpectedTensor[] {
  const h = config.hiddenSize;
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKvHeads * config.headDim;
  const prefix = config.tensorPrefix ?? '';
  const out: ExpectedTensor[] = [{ name: `${prefix}model.embed_tokens.weight`, shape: [config.vocabSize, h], layer: undefined, slot: 'embedTokens' }];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `${prefix}model.layers.${l}.`;
    const add = (suffix: string, slot: LayerSlot, shape: number[]): void => {
      out.push({ name: p + suffix, shape, layer: l, slot });
    };
    add('input_layernorm.weight', 'inputNorm', [h]);
    if (config.fusedProjections) {
      add('self_attn.qkv_proj.weight', 'qkv', [qDim + 2 * kvDim, h]);
    } else {
      add('self_attn.q_proj.weight', 'q', [qDim, h]);
      add('self_attn.k_proj.weight', 'k', [kvDim, h]);
      add('self_attn.v_proj.weight', 'v', [kvDim, h]);
    }
    add('self_attn.o_proj.weight', 'o', [h, qDim]);
    if (config.qkNorm) {
      add('self_attn.q_norm.weight', 'qNorm', [config.headDim]);
      add('self_attn.k_norm.weight', 'kNorm', [config.headDim]);
    }
    if (config.attentionBias) {
      add('self_attn.q_proj.bias', 'qBias', [qDim]);
      add('self_attn.k_proj.bias', 'kBias', [kvDim]);
      add('self_attn.v_proj.bias', 'vBias', [kvDim]);
    }
    if (config.attentionOutputBias) add('self_attn.o_proj.bias', 'oBias', [h]);
    add('post_attention_layernorm.weight', 'postAttentionNorm', [h]);
    if (config.sandwichNorms) {
      add('pre_feedforward_layernorm.weight', 'preFeedforwardNorm', [h]);
      add('post_feedforward_layernorm.weight', 'postFeedforwardNorm', [h]);
    }
    if (config.fusedProjections) {
      add('mlp.gate_up_proj.weight', 'gateUp', [2 * config.intermediateSize, h]);
    } else {
      add('mlp.gate_proj.weight', 'gate', [config.intermediateSize, h]);
      add('mlp.up_proj.weight', 'up', [config.intermediateSize, h]);
    }
    add('mlp.down_proj.weight', 'down', [h, config.intermediateSize]);
  }
  out.push({ name: `${prefix}model.norm.weight`, shape: [h], layer: undefined, slot: 'finalNorm' });
  if (!config.tieWordEmbeddings) out.push({ name: `${prefix}lm_head.weight`, shape: [config.vocabSize, h], layer: undefined, slot: 'lmHead' });
  return out;
}

/**
 * The HF name of the last layer's first attention weight: a cheap probe that `num_hidden_layers` matches the file
 * before every expected name is listed.
 */
export function lastLayerProbeName(config: ModelConfig): string {
  const proj = config.fusedProjections ? 'qkv_proj' : 'q_proj';
  return `${config.tensorPrefix ?? ''}model.layers.${config.numLayers - 1}.self_attn.${proj}.weight`;
}

/**
 * Rows `[start, end)` of a 2-D tensor as a tensor sharing the same memory (no copy): a subarray of the elements
 * (dense), of the stored row bytes (GGML blocks, compressed-tensors codes), and of per-row scales / zero points (a
 * per-tensor `[1]` scale is shared).
 * @throws EngineError `SHAPE_MISMATCH` when the range is outside the tensor.
 */
function sliceRows(t: Tensor, start: number, end: number, name = 'tensor'): Tensor {
  const [rows, cols] = t.shape as [number, number];
  if (t.shape.length !== 2 || !(start >= 0 && start < end && end <= rows)) {
    throw new EngineError('SHAPE_MISMATCH', `${name}: rows [${start}, ${end}) are outside shape [${t.shape.join(', ')}]`, { field: name });
  }
  const rowLen = isDenseDType(t.dtype) ? cols : quantizedRowBytes(t.dtype, cols);
  const perRow = (a: Float32Array | Int8Array | undefined): typeof a => {
    if (!a || a.length === 1) return a;
    const k = a.length / rows;
    return a.subarray(start * k, end * k) as typeof a;
  };
  const out: Tensor = { ...t, shape: [end - start, cols], data: t.data.subarray(start * rowLen, end * rowLen) as Tensor['data'] };
  const scale = perRow(t.scale) as Float32Array | undefined;
  const zeroPoint = perRow(t.zeroPoint) as Int8Array | undefined;
  const inputScale = t.inputScale && t.inputScale.length === rows ? t.inputScale.subarray(start, end) : t.inputScale;
  return { ...out, scale, zeroPoint, inputScale };
}

/**
 * Check a tensor's shape against what the config implies.
 * @throws EngineError `SHAPE_MISMATCH` naming the file, tensor, expected and actual shapes.
 */
export function checkShape(expected: ExpectedTensor, actual: readonly number[], file: string, sourceName = expected.name): void {
  const same = actual.length === expected.shape.length && actual.every((d, i) => d === expected.shape[i]);
  if (!same) {
    throw new EngineError(
      'SHAPE_MISMATCH',
      `${file}: tensor ${sourceName} has shape [${actual.join(', ')}] but the config implies [${expected.shape.join(', ')}]`,
      { file, field: sourceName },
    );
  }
}

/**
 * Assemble {@link ModelWeights} from tensors keyed by HF name (every name of {@link expectedHfTensors} must be
 * present; shapes are re-checked).
 * @throws EngineError `MISSING_TENSOR` / `SHAPE_MISMATCH`.
 */
export function assembleWeights(config: ModelConfig, tensors: ReadonlyMap<string, Tensor>, file: string): ModelWeights {
  const layers: Array<Partial<Record<keyof LayerWeights, Tensor>>> = Array.from({ length: config.numLayers }, () => ({}));
  const top: Partial<Record<'embedTokens' | 'finalNorm' | 'lmHead', Tensor>> = {};
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKvHeads * config.headDim;
  for (const e of expectedHfTensors(config)) {
    const t = tensors.get(e.name);
    if (!t) throw new EngineError('MISSING_TENSOR', `${file}: tensor ${e.name} is missing`, { file, field: e.name });
    checkShape(e, t.shape, file);
    if (e.layer === undefined) {
      top[e.slot as 'embedTokens' | 'finalNorm' | 'lmHead'] = t;
      continue;
    }
    const layer = layers[e.layer]!;
    if (e.slot === 'qkv') {
      layer.q = sliceRows(t, 0, qDim, e.name);
      layer.k = sliceRows(t, qDim, qDim + kvDim, e.name);
      layer.v = sliceRows(t, qDim + kvDim, qDim + 2 * kvDim, e.name);
    } else if (e.slot === 'gateUp') {
      layer.gate = sliceRows(t, 0, config.intermediateSize, e.name);
      layer.up = sliceRows(t, config.intermediateSize, 2 * config.intermediateSize, e.name);
    } else {
      layer[e.slot as keyof LayerWeights] = t;
    }
  }
  const embedTokens = top.embedTokens!;
  return {
    embedTokens,
    layers: layers as unknown as LayerWeights[],
    finalNorm: top.finalNorm!,
    lmHead: config.tieWordEmbeddings ? embedTokens : top.lmHead!,
  };
}

/** HF name → tensor for every weight of a model (`lm_head.weight` omitted when tied), in a stable order. */
export function weightsByHfName(config: ModelConfig, weights: ModelWeights): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  if (config.fusedProjections) {
    throw new EngineError('INVALID_ARGUMENT', `${config.architecture}: fused qkv_proj / gate_up_proj weights are not re-assembled by name`, { field: 'fusedProjections' });
  }
  for (const e of expectedHfTensors(config)) {
    const t = e.layer === undefined ? weights[e.slot as 'embedTokens' | 'finalNorm' | 'lmHead'] : weights.layers[e.layer]![e.slot as keyof LayerWeights];
    if (!t) throw new EngineError('MISSING_TENSOR', `weights have no ${e.name}`, { field: e.name });
    out.set(e.name, t);
  }
  return out;
}
