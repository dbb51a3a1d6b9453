import type { ModelConfig } from '../config/model-config.js';
import { EngineError } from '../errors.js';
import { asWeightMatrix, type Tensor, type WeightMatrix } from '../tensor.js';

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
  readonly postAttentionNorm: Tensor;
  readonly gate: Tensor;
  readonly up: Tensor;
  readonly down: Tensor;
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

/** Which {@link LayerWeights} field a per-layer HF tensor fills. */
type LayerSlot = keyof LayerWeights;

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
  const out: ExpectedTensor[] = [{ name: 'model.embed_tokens.weight', shape: [config.vocabSize, h], layer: undefined, slot: 'embedTokens' }];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const add = (suffix: string, slot: LayerSlot, shape: number[]): void => {
      out.push({ name: p + suffix, shape, layer: l, slot });
    };
    add('input_layernorm.weight', 'inputNorm', [h]);
    add('self_attn.q_proj.weight', 'q', [qDim, h]);
    add('self_attn.k_proj.weight', 'k', [kvDim, h]);
    add('self_attn.v_proj.weight', 'v', [kvDim, h]);
    add('self_attn.o_proj.weight', 'o', [h, qDim]);
    if (config.attentionBias) {
      add('self_attn.q_proj.bias', 'qBias', [qDim]);
      add('self_attn.k_proj.bias', 'kBias', [kvDim]);
      add('self_attn.v_proj.bias', 'vBias', [kvDim]);
    }
    if (config.attentionOutputBias) add('self_attn.o_proj.bias', 'oBias', [h]);
    add('post_attention_layernorm.weight', 'postAttentionNorm', [h]);
    add('mlp.gate_proj.weight', 'gate', [config.intermediateSize, h]);
    add('mlp.up_proj.weight', 'up', [config.intermediateSize, h]);
    add('mlp.down_proj.weight', 'down', [h, config.intermediateSize]);
  }
  out.push({ name: 'model.norm.weight', shape: [h], layer: undefined, slot: 'finalNorm' });
  if (!config.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [config.vocabSize, h], layer: undefined, slot: 'lmHead' });
  return out;
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
  const layers: Array<Partial<Record<LayerSlot, Tensor>>> = Array.from({ length: config.numLayers }, () => ({}));
  const top: Partial<Record<'embedTokens' | 'finalNorm' | 'lmHead', Tensor>> = {};
  for (const e of expectedHfTensors(config)) {
    const t = tensors.get(e.name);
    if (!t) throw new EngineError('MISSING_TENSOR', `${file}: tensor ${e.name} is missing`, { file, field: e.name });
    checkShape(e, t.shape, file);
    if (e.layer === undefined) top[e.slot as 'embedTokens' | 'finalNorm' | 'lmHead'] = t;
    else layers[e.layer]![e.slot as LayerSlot] = t;
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
  for (const e of expectedHfTensors(config)) {
    const t = e.layer === undefined ? weights[e.slot as 'embedTokens' | 'finalNorm' | 'lmHead'] : weights.layers[e.layer]![e.slot as LayerSlot];
    if (!t) throw new EngineError('MISSING_TENSOR', `weights have no ${e.name}`, { field: e.name });
    out.set(e.name, t);
  }
  return out;
}
