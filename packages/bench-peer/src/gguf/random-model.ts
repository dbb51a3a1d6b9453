import { f32ToBf16Bits, f32ToF16Bits } from '@kvq/fp8';

import { checkLlamaShape, llamaModelMetadata, llamaTensorSlots, syntheticTokenizerMetadata, type LlamaShape, type LlamaTensorSlot } from './llama.js';
import { ggufTensorType, LLAMA_FTYPE, quantizeMatrix, writeGguf, type GgmlTensorType, type GgufScheme, type GgufTensorSpec } from '@kvq/engine';

/** 32-bit FNV-1a hash of a string (per-tensor seeds). */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * The float32 values of one tensor of a random-weight model (before rounding to the file's type): uniform with
 * standard deviation `1/sqrt(fanIn)` for matrices, 0.5 for the embedding, and `1 ± 0.1` for norm weights.
 * Deterministic in (`seed`, tensor name): the same tensor always gets the same values, whatever else is written.
 */
export function randomTensorValues(slot: LlamaTensorSlot, seed: number): Float32Array {
  const count = slot.dims.reduce((a, b) => a * b, 1);
  const out = new Float32Array(count);
  // mulberry32, inlined for speed (1.1 G values for the TinyLlama shape).
  let a = (fnv1a(slot.name) ^ Math.imul(seed >>> 0, 0x9e3779b1)) >>> 0;
  const amp = slot.kind === 'norm' ? 0.1 : slot.kind === 'embed' ? 0.5 * Math.sqrt(3) : Math.sqrt(3 / slot.fanIn);
  const center = slot.kind === 'norm' ? 1 : 0;
  for (let i = 0; i < count; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = center + (2 * u - 1) * amp;
  }
  return out;
}

/** Round float32 values to a GGUF tensor type: the same array for F32, IEEE half or bfloat16 bits otherwise. */
export function toGgmlData(values: Float32Array, type: GgmlTensorType): Float32Array | Uint16Array {
  if (type === 'F32') return values;
  const out = new Uint16Array(values.length);
  if (type === 'F16') for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]!);
  else for (let i = 0; i < values.length; i++) out[i] = f32ToBf16Bits(values[i]!);
  return out;
}

/**
 * The tensors of a random-weight Llama model as writer specs. Norm vectors are always F32 (llama.cpp's own
 * converters keep 1-D tensors in F32); matrices and the embedding use `type`.
 */
export function randomLlamaTensors(shape: LlamaShape, type: GgmlTensorType, seed: number): GgufTensorSpec[] {
  return llamaTensorSlots(shape).map((slot) => {
    const t: GgmlTensorType = slot.kind === 'norm' ? 'F32' : type;
    return { name: slot.name, dims: slot.dims, type: t, data: () => toGgmlData(randomTensorValues(slot, seed), t) };
  });
}

/**
 * The tensors of a random-weight Llama model quantized as llama.cpp's file type `scheme` writes them: each matrix's
 * GGML type from `@kvq/engine`'s `ggufTensorType` (llama.cpp's type mix: Q6_K output, Q6_K `attn_v`/`ffn_down` in
 * the `use_more_bits` layers of Q4_K_M/Q5_K_M, fallbacks for rows that are not whole K-quant blocks), quantized by
 * `quantizeMatrix` from the same float32 values {@link randomLlamaTensors} rounds; norms F32.
 */
export function randomLlamaQuantizedTensors(shape: LlamaShape, scheme: GgufScheme, seed: number): { tensors: GgufTensorSpec[]; types: Map<string, string> } {
  const types = new Map<string, string>();
  const tensors = llamaTensorSlots(shape).map((slot): GgufTensorSpec => {
    if (slot.kind === 'norm') {
      types.set(slot.name, 'f32');
      return { name: slot.name, dims: slot.dims, type: 'F32', data: () => randomTensorValues(slot, seed) };
    }
    const [cols, rows] = slot.dims as [number, number];
    const t = ggufTensorType(scheme, slot.name, cols, shape.numLayers, false);
    types.set(slot.name, t);
    if (t === 'f16') return { name: slot.name, dims: slot.dims, type: 'F16', data: () => toGgmlData(randomTensorValues(slot, seed), 'F16') };
    return { name: slot.name, dims: slot.dims, type: t.toUpperCase() as GgmlTensorType, data: () => quantizeMatrix(randomTensorValues(slot, seed), rows, cols, t).data as Uint8Array };
  });
  return { tensors, types };
}

/**
 * Write a random-weight Llama model as GGUF: llama.cpp metadata for `shape`, the synthetic SentencePiece
 * vocabulary of `shape.vocabSize` tokens, and seeded weights (see {@link randomTensorValues}) of `type`, or, with
 * `scheme` (`q8_0`, `q4_0`, `q4_k_m`, `q5_k_m`, `q6_k`, ...), quantized with llama.cpp's type mix for that file type
 * (see {@link randomLlamaQuantizedTensors}; `type` is then ignored).
 * @returns the file size in bytes
 * @throws BenchPeerError `INVALID_ARGUMENT` for a bad shape; EngineError `INVALID_ARGUMENT` / `IO_ERROR` from the writer
 */
export async function writeRandomLlamaGguf(path: string, shape: LlamaShape, options: { type: GgmlTensorType; seed: number; name: string; scheme?: GgufScheme }): Promise<number> {
  checkLlamaShape(shape, options.name);
  const tokenizer = syntheticTokenizerMetadata(shape.vocabSize);
  if (options.scheme) {
    const { tensors } = randomLlamaQuantizedTensors(shape, options.scheme, options.seed);
    return writeGguf(path, [...llamaModelMetadata(shape, options.name, LLAMA_FTYPE[options.scheme]), ...tokenizer], tensors);
  }
  return writeGguf(path, [...llamaModelMetadata(shape, options.name, options.type), ...tokenizer], randomLlamaTensors(shape, options.type, options.seed));
}
