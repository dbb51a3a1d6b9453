/**
 * From a loaded model to what {@link LlamaForward} runs: kernel-contract weight views (no copies of matrices; norm
 * vectors widened to float32 once, Gemma's `(1 + w)` folded in), RoPE tables (global and, for Gemma 3, local), the
 * per-layer sliding windows and the family's numerics ({@link ForwardVariant}).
 * @module
 */
import { buildRopeTable, type RopeScaling as KernelRopeScaling, type RopeTable } from '@kvq/kernels';

import type { ModelConfig, RopeScaling } from '../config/model-config.js';
import type { LoadedModel } from '../load/types.js';
import { asWeightMatrix, tensorToFloat32, type Tensor } from '../tensor.js';
import type { ForwardVariant, LayerAttentionDims, LlamaDims, LlamaWeights } from './forward.js';

function toKernelRopeScaling(s: RopeScaling | null): { scaling?: KernelRopeScaling; factors?: Float32Array } {
  if (!s) return {};
  if (s.type === 'llama3') {
    return {
      scaling: {
        type: 'llama3',
        factor: s.factor,
        lowFreqFactor: s.lowFreqFactor,
        highFreqFactor: s.highFreqFactor,
        originalMaxPositions: s.originalMaxPositionEmbeddings,
      },
    };
  }
  if (s.type === 'freq_factors') return { factors: s.factors };
  return { scaling: s };
}

/**
 * The RoPE cos/sin table of a config for positions `[0, maxPositions)` (`local`: Gemma 3's sliding-layer RoPE).
 * @see `@kvq/kernels` `buildRopeTable` for the rounding and each scaling type.
 */
function ropeTableFor(config: ModelConfig, maxPositions: number, local = false): RopeTable {
  const theta = local && config.localRope ? config.localRope.theta : config.ropeTheta;
  const { scaling, factors } = toKernelRopeScaling(local && config.localRope ? config.localRope.scaling : config.ropeScaling);
  return buildRopeTable({
    rotaryDim: config.headDim,
    theta,
    maxPositions,
    ...(scaling ? { scaling } : {}),
    ...(factors ? { frequencyFactors: factors } : {}),
  });
}

/** A norm weight as float32, plus the config's weight offset (Gemma `(1 + w)`, computed in float32 as transformers). */
function normWeight(t: Tensor, offset: number): Float32Array {
  const w = tensorToFloat32(t);
  if (offset === 0) return w;
  const out = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) out[i] = offset + w[i]!;
  return out;
}

/** Kernel-contract views of a loaded model's weights (no copies of matrices; norms widened to float32 once). */
export function llamaWeightsOf(model: LoadedModel): LlamaWeights {
  const w = model.weights;
  const offset = model.config.normWeightOffset ?? 0;
  const norm = (t: Tensor | undefined): Float32Array | undefined => (t ? normWeight(t, offset) : undefined);
  const f32 = (t: Tensor | undefined): Float32Array | undefined => (t ? tensorToFloat32(t) : undefined);
  return {
    embedTokens: asWeightMatrix(w.embedTokens, 'model.embed_tokens.weight'),
    norm: normWeight(w.finalNorm, offset),
    lmHead: asWeightMatrix(w.lmHead, 'lm_head.weight'),
    layers: w.layers.map((l, i) => ({
      inputLayernorm: normWeight(l.inputNorm, offset),
      postAttentionLayernorm: normWeight(l.postAttentionNorm, offset),
      qProj: asWeightMatrix(l.q, `layers.${i}.q_proj`),
      kProj: asWeightMatrix(l.k, `layers.${i}.k_proj`),
      vProj: asWeightMatrix(l.v, `layers.${i}.v_proj`),
      oProj: asWeightMatrix(l.o, `layers.${i}.o_proj`),
      qBias: f32(l.qBias),
      kBias: f32(l.kBias),
      vBias: f32(l.vBias),
      oBias: f32(l.oBias),
      gateProj: asWeightMatrix(l.gate, `layers.${i}.gate_proj`),
      upProj: asWeightMatrix(l.up, `layers.${i}.up_proj`),
      downProj: asWeightMatrix(l.down, `layers.${i}.down_proj`),
      qNorm: norm(l.qNorm),
      kNorm: norm(l.kNorm),
      preFeedforwardLayernorm: norm(l.preFeedforwardNorm),
      postFeedforwardLayernorm: norm(l.postFeedforwardNorm),
    })),
  };
}

/** The family switches of a config for the forward pass (undefined for plain Llama-family configs). */
function forwardVariantOf(c: ModelConfig): ForwardVariant | undefined {
  const v: ForwardVariant = {
    ...(c.hiddenAct === 'gelu_pytorch_tanh' ? { activation: 'gelu_tanh' as const } : {}),
    ...(c.embeddingScale !== undefined ? { embeddingScale: c.embeddingScale } : {}),
    ...(c.attentionScale !== undefined ? { softmaxScale: c.attentionScale } : {}),
    ...(c.attnLogitSoftcapping !== undefined ? { attnLogitSoftcapping: c.attnLogitSoftcapping } : {}),
    ...(c.finalLogitSoftcapping !== undefined ? { finalLogitSoftcapping: c.finalLogitSoftcapping } : {}),
  };
  return Object.keys(v).length > 0 ? v : undefined;
}

/**
 * {@link LlamaDims} of a config with RoPE tables for `maxPositions` positions: one global table, plus a local one
 * for sliding layers when the config has `localRope`; per-layer windows when `layerTypes` is set.
 */
export function llamaDimsOf(c: ModelConfig, maxPositions: number): LlamaDims {
  const rope = ropeTableFor(c, maxPositions);
  let layers: LayerAttentionDims[] | undefined;
  if (c.layerTypes) {
    const local = c.localRope ? ropeTableFor(c, maxPositions, true) : rope;
    layers = c.layerTypes.map((t) =>
      t === 'sliding_attention' ? { rope: local, slidingWindow: c.slidingWindow ?? undefined } : { rope, slidingWindow: undefined },
    );
  }
  return {
    hiddenSize: c.hiddenSize,
    numLayers: c.numLayers,
    numHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    intermediateSize: c.intermediateSize,
    vocabSize: c.vocabSize,
    rmsNormEps: c.rmsNormEps,
    ropeStyle: 'rotate_half',
    rope,
    slidingWindow: c.slidingWindow ?? undefined,
    layers,
    variant: forwardVariantOf(c),
  };
}
