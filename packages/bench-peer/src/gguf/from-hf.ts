import {
  bf16ToNumber,
  f16ToNumber,
  ggufNameOfHf,
  GgufType,
  permuteRotaryRows,
  weightsByHfName,
  writeGguf,
  type GgmlTensorType,
  type GgufEntry,
  type GgufTensorSpec,
  type LoadedModel,
  type Tensor,
} from '@kvq/engine';
import { f32ToBf16Bits, f32ToF16Bits } from '@kvq/fp8';

import { BenchPeerError } from '../errors.js';
import { llamaModelMetadata, type LlamaShape } from './llama.js';

/**
 * GGUF (llama.cpp) name of a Hugging Face Llama tensor name: `@kvq/engine`'s table (the one its GGUF loader reads).
 * @throws BenchPeerError `INVALID_ARGUMENT` for a name without a GGUF counterpart
 */
export function ggufTensorName(hfName: string): string {
  const name = ggufNameOfHf(hfName);
  if (name === undefined) throw new BenchPeerError('INVALID_ARGUMENT', `tensor ${hfName} has no GGUF name`, { field: hfName });
  return name;
}

/** A tensor converted to a GGUF type: bit-exact when the type is the tensor's own or wider. */
function convertTensor(t: Tensor, type: GgmlTensorType): Float32Array | Uint16Array {
  const same = (t.dtype === 'f32' && type === 'F32') || (t.dtype === 'f16' && type === 'F16') || (t.dtype === 'bf16' && type === 'BF16');
  if (same) return (t.data as Float32Array | Uint16Array).slice();
  const n = t.data.length;
  const value = (i: number): number =>
    t.dtype === 'f32' ? (t.data as Float32Array)[i]! : t.dtype === 'f16' ? f16ToNumber((t.data as Uint16Array)[i]!) : bf16ToNumber((t.data as Uint16Array)[i]!);
  if (type === 'F32') return Float32Array.from({ length: n }, (_, i) => value(i));
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = type === 'F16' ? f32ToF16Bits(value(i)) : f32ToBf16Bits(value(i));
  return out;
}

/**
 * GGUF tokenizer metadata of a loaded model's byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`,
 * GPT-2 pre-tokenizer), as llama.cpp's converter writes it.
 * @throws BenchPeerError `INVALID_ARGUMENT` for a tokenizer that is not byte-level BPE with merges.
 */
export function gpt2TokenizerMetadata(model: LoadedModel): GgufEntry[] {
  const tok = model.tokenizer;
  const json = tok.json as { model?: { type?: string; merges?: unknown[] } };
  if (json.model?.type !== 'BPE' || !Array.isArray(json.model.merges)) {
    throw new BenchPeerError('INVALID_ARGUMENT', `${model.path}: the tokenizer is not a BPE tokenizer with merges`, { file: model.path, field: 'tokenizer' });
  }
  const tokens = Array.from({ length: tok.vocabSize }, (_, i) => tok.idToToken(i) ?? `[PAD${i}]`);
  const special = new Set(tok.addedTokens.filter((t) => t.special).map((t) => t.id));
  const merges = json.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : String(m)));
  const out: GgufEntry[] = [
    { key: 'tokenizer.ggml.model', type: GgufType.STRING, value: 'gpt2' },
    { key: 'tokenizer.ggml.pre', type: GgufType.STRING, value: 'gpt-2' },
    { key: 'tokenizer.ggml.tokens', type: GgufType.ARRAY, itemType: GgufType.STRING, value: tokens },
    { key: 'tokenizer.ggml.token_type', type: GgufType.ARRAY, itemType: GgufType.INT32, value: tokens.map((_, i) => (special.has(i) ? 3 : 1)) },
    { key: 'tokenizer.ggml.merges', type: GgufType.ARRAY, itemType: GgufType.STRING, value: merges },
    { key: 'tokenizer.ggml.add_bos_token', type: GgufType.BOOL, value: tok.addsBos },
  ];
  if (tok.bosTokenId !== undefined) out.push({ key: 'tokenizer.ggml.bos_token_id', type: GgufType.UINT32, value: tok.bosTokenId });
  // End of sequence, then end of turn (ChatML's <|im_end|>) when the model declares a second stop token.
  const [eos, eot] = [...new Set([...tok.eosTokenIds, ...(model.generationConfig.eosTokenIds ?? []), ...model.config.eosTokenIds])];
  if (eos !== undefined) out.push({ key: 'tokenizer.ggml.eos_token_id', type: GgufType.UINT32, value: eos });
  if (eot !== undefined) out.push({ key: 'tokenizer.ggml.eot_token_id', type: GgufType.UINT32, value: eot });
  if (model.chatTemplate) out.push({ key: 'tokenizer.chat_template', type: GgufType.STRING, value: model.chatTemplate.source });
  return out;
}

/**
 * Write a loaded Hugging Face Llama model (no biases, untied or tied head) as a GGUF file llama.cpp runs: Q/K rows
 * permuted from rotate-half to llama.cpp's interleaved RoPE order, 2-D tensors in `type`, norms in F32, the
 * byte-level BPE tokenizer as `gpt2` metadata. kvq's GGUF loader undoes the permutation, so loading the result
 * gives back the same weights (bit for bit when `type` is the model's dtype or F32).
 * @returns the file size in bytes
 * @throws BenchPeerError `INVALID_ARGUMENT` (biases, unsupported tokenizer); EngineError `INVALID_ARGUMENT` / `IO_ERROR` from the writer
 */
export async function writeHfModelAsGguf(path: string, model: LoadedModel, type: GgmlTensorType): Promise<number> {
  const c = model.config;
  if (c.architecture !== 'LlamaForCausalLM' || c.attentionBias || c.attentionOutputBias || c.ropeScaling) {
    throw new BenchPeerError('INVALID_ARGUMENT', `${model.path}: only Llama models without biases or RoPE scaling can be written as GGUF here`, { file: model.path });
  }
  // ModelConfig already names every LlamaShape size (hiddenSize ... ropeTheta); only the context length differs.
  const shape: LlamaShape = { ...c, contextLength: c.maxPositionEmbeddings };
  const name = model.path.split(/[\\/]/).filter(Boolean).pop() ?? 'model';
  const tensors: GgufTensorSpec[] = [];
  for (const [hfName, t] of weightsByHfName(c, model.weights)) {
    if (hfName === 'lm_head.weight' && c.tieWordEmbeddings) continue;
    const tensorType: GgmlTensorType = t.shape.length === 1 ? 'F32' : type;
    const rows = t.shape[0]!;
    const cols = t.shape.length === 2 ? t.shape[1]! : 1;
    const heads = /q_proj/.test(hfName) ? c.numHeads : /k_proj/.test(hfName) ? c.numKvHeads : 0;
    tensors.push({
      name: ggufTensorName(hfName),
      dims: [...t.shape].reverse(),
      type: tensorType,
      data: () => {
        const data = convertTensor(t, tensorType);
        return heads > 0 ? permuteRotaryRows(data, rows, cols, heads, 'toInterleaved', hfName) : data;
      },
    });
  }
  return writeGguf(path, [...llamaModelMetadata(shape, name, type), ...gpt2TokenizerMetadata(model)], tensors);
}
