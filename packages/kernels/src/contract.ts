/**
 * The kernel backend contract: every op a Llama-family forward pass with a paged FP8 KV cache needs.
 *
 * The engine calls kernels only through {@link KernelBackend}. Three kinds of backend implement it:
 * the pure-TypeScript reference (this package, the oracle of every parity test), the native CPU
 * backend (`@kvq/kernels-cpu`) and GPU backends. Their facades validate arguments with the shared
 * `validate*` helpers (`./validate.ts`), so the same bad input gives the same {@link KernelError}
 * everywhere.
 *
 * Conventions shared by every op:
 * - Activations are `Float32Array` (or, on backends with device memory, device arrays: see ./device.ts), row-major, contiguous. Shapes are written `[a, b, c]`, last index fastest.
 * - Ops are synchronous and never allocate their outputs: the caller passes `out` buffers.
 * - Counts (`rows`, `numTokens`, `length`, ...) are explicit. A buffer must hold AT LEAST the elements the
 *   counts imply; elements past that are neither read nor written (so preallocated max-size buffers work).
 *   Weight matrices and the KV cache are exact: their `data` length must equal the product of their dims.
 * - Unless an op says otherwise, `out` must not overlap an input. Ops that allow aliasing say so.
 * - Scales follow vLLM: `q = encodeFp8(fround(x / scale))` (satfinite), `x ≈ fround(decodeFp8(q) * scale)`.
 *
 * Exactness (what the parity kit in `@kvq/kernels/testing` enforces):
 * - bit-exact across backends: `add`, `embedding`, `argmax`, `reshapeAndCache` (FP8 codes and bf16/f16 bits),
 *   `amaxTensor`, `amaxPerHead`, `quantizeFp8`, `dequantizeFp8`, and the FP8 rounding of the query in FP8-query mode;
 * - within a tolerance (`|got - ref| <= atol + rtol * |ref|`, see `DEFAULT_TOLERANCES`): `linear`, `rmsNorm`,
 *   `siluAndMul`, `geluTanhAndMul`, `rope`, `softmax`, `pagedAttention`, whose sums and transcendental functions may be evaluated in
 *   float32 (the reference uses float64 and rounds once on store). NaN must stay NaN.
 *
 * @see docs/spec/vllm-fp8-kv-cache.md section 5 (kernels)
 * @module
 */
import type { KvLayerCache } from '@kvq/cache';
import type { Fp8Format, Saturation, ScaleLayout } from '@kvq/fp8';
import type { Activation, DeviceMemory } from './device.js';
import type { SampleBucketIdsArgs, SampleBucketsArgs, SampleBucketsResult } from './sample-buckets.js';
import type { SampleDrawArgs } from './sample-draw.js';

export type { Activation, DeviceArray, DeviceArrayKind, DeviceBlockCopy, DeviceMemory, HostArgs } from './device.js';

export type { KvLayerCache };
export type { KernelErrorCode } from './errors.js';

/** Dense element types of a weight matrix. `bf16` and `f16` data are raw 16-bit patterns in a `Uint16Array`. */
export type DenseWeightDtype = 'f32' | 'bf16' | 'f16';

/**
 * GGML block-quantized weight types (GGUF files; block layouts in docs/spec/quantized-weights.md). `data` is a
 * `Uint8Array` of the raw blocks exactly as stored in the file: each row holds `cols / blockElems` consecutive
 * blocks (`cols` must be a multiple of the block size: 32 for `q8_0`..`q5_1`, 256 for the K-quants), rows are
 * contiguous. Blocks carry their own scales; `scale`/`zeroPoint`/`groupSize` are not used.
 */
export type GgmlWeightDtype = 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q4_k' | 'q5_k' | 'q6_k';

/**
 * compressed-tensors quantized weight types (checkpoints written by llm-compressor), kept in their stored form:
 * - `fp8_e4m3` (`float-quantized`): `data` = `Uint8Array [rows * cols]` of OCP e4m3fn codes; `scale` = f32 `[1]`
 *   (per tensor) or `[rows]` (per output channel); `w = decode(q) * scale`.
 * - `int8` (`int-quantized`, symmetric): `data` = `Int8Array [rows * cols]`; `scale` f32 `[rows]` or `[1]`;
 *   `w = q * scale`.
 * - `int4` (`pack-quantized`): `data` = `Uint8Array [rows * cols / 2]`, two values per byte, element `2j` in the
 *   low nibble and `2j + 1` in the high nibble (the little-endian bytes of compressed-tensors' int32 packing), each
 *   nibble the unsigned value `q + 8` (`q` in [-8, 7]); `groupSize` divides `cols` (a per-channel checkpoint uses
 *   `groupSize = cols`); `scale` f32 `[rows, cols / groupSize]`; optional `zeroPoint` (asymmetric) `Int8Array
 *   [rows, cols / groupSize]` in [-8, 7]; `w = (q - zeroPoint) * scale` (zero point 0 when absent).
 * Activations stay float32 on every backend (W8A16 / W4A16 math, f32 accumulation).
 */
export type CompressedWeightDtype = 'fp8_e4m3' | 'int8' | 'int4';

/** Element type of a weight matrix: dense, GGML block-quantized or compressed-tensors quantized. */
export type WeightDtype = DenseWeightDtype | GgmlWeightDtype | CompressedWeightDtype;

/**
 * Element type of a KV cache: 16/32-bit float (`auto` caches), one of the FP8 formats (per-tensor / per-head
 * scales), or a write-time-scaled dtype (`fp8_per_token_head`, `int8_per_token_head`, `int4_per_token_head`,
 * `int4_g16`/`int4_g32`/`int4_g64`, `nvfp4`, `q4_0`, `int4_g32_f16`: scales computed by `reshapeAndCache` and stored in each block,
 * docs/spec/kv-dtypes.md). A backend that has no kernels for a dtype refuses it with `UNSUPPORTED`.
 */
export type KvDtype = KvLayerCache['dtype'];

/**
 * A row-major 2-D weight matrix `[rows, cols]`, as stored in Hugging Face checkpoints.
 * For a linear layer `rows = outFeatures`, `cols = inFeatures`; for an embedding table `rows = vocabSize`,
 * `cols = hiddenSize`.
 * NOTE: `data` is exact (no slack): `rows * cols` elements for the dense dtypes (a `Float32Array` for `f32`, a
 * `Uint16Array` of bit patterns for `bf16` / `f16`); for the quantized dtypes see {@link GgmlWeightDtype} and
 * {@link CompressedWeightDtype} (their byte counts are given by `weightDataLength` in `./quant`).
 */
export interface WeightMatrix {
  /** Element type of `data`. */
  readonly dtype: WeightDtype;
  /** The stored elements or blocks, row-major. */
  readonly data: Float32Array | Uint16Array | Uint8Array | Int8Array;
  /** Number of rows (output features of a linear layer). */
  readonly rows: number;
  /** Number of columns (input features of a linear layer). */
  readonly cols: number;
  /** compressed-tensors dtypes only: dequantization scales (float32; shapes in {@link CompressedWeightDtype}). */
  readonly scale?: Float32Array | undefined;
  /** `int4` only, asymmetric checkpoints: zero points `[rows, cols / groupSize]` in [-8, 7]. */
  readonly zeroPoint?: Int8Array | undefined;
  /** `int4` only: columns per scale group (divides `cols`; `cols` for per-channel). */
  readonly groupSize?: number | undefined;
}

/**
 * A precomputed rotary-embedding table, shared by all backends so RoPE is bit-identical across them.
 * Built by `buildRopeTable` (see `./rope.ts`). Entry `[p, i]` holds `cos(p * invFreq[i])` and
 * `sin(p * invFreq[i])` computed in float64 then rounded to float32.
 */
export interface RopeTable {
  /** Number of leading dims of each head that are rotated (even, `<= headSize`). Usually `headSize`. */
  readonly rotaryDim: number;
  /** Number of positions in the table; a position must be in `[0, maxPositions)`. */
  readonly maxPositions: number;
  /** Inverse frequencies after scaling, length `rotaryDim / 2` (float32, for inspection and tests). */
  readonly invFreq: Float32Array;
  /** `cos` values, shape `[maxPositions, rotaryDim / 2]`. */
  readonly cos: Float32Array;
  /** `sin` values, shape `[maxPositions, rotaryDim / 2]`. */
  readonly sin: Float32Array;
}

/**
 * Which dims of a head RoPE rotates together.
 * - `rotate_half` (Hugging Face Llama, vLLM `is_neox_style=true`): dim `i` pairs with dim `i + rotaryDim/2`.
 * - `interleaved` (GPT-J, Meta's original Llama checkpoints, vLLM `is_neox_style=false`): dims `2i` and `2i+1` pair.
 * Pair `i` rotates by angle `position * invFreq[i]`: `(a, b) -> (a*cos - b*sin, b*cos + a*sin)`.
 */
export type RopeStyle = 'rotate_half' | 'interleaved';

// ---------------------------------------------------------------------------------------------------
// Op arguments
// ---------------------------------------------------------------------------------------------------

/**
 * `linear`: `out[r, o] = sum_i x[r, i] * W[o, i] (+ bias[o])`, i.e. `y = x W^T (+ b)`, accumulated in at
 * least float32 (the reference accumulates in float64). One row for decode, many for prefill / batched decode.
 */
export interface LinearArgs<A extends Activation = Float32Array> {
  /** Input activations `[rows, weight.cols]`. */
  readonly x: A;
  /** Weight `[outFeatures, inFeatures]`, any {@link WeightDtype}. */
  readonly weight: WeightMatrix;
  /** Optional bias `[weight.rows]` (float32). */
  readonly bias?: Float32Array | undefined;
  /** Output `[rows, weight.rows]`. Must not overlap `x`. */
  readonly out: A;
  /** Number of input rows (tokens), `>= 1`. */
  readonly rows: number;
  /**
   * How the activations enter the product (`'q8'`: GGML and `int8` weight dtypes; `'q16'`: `int4`; default `'f32'`):
   * - `'f32'`: as given (W4A16 / W8A16-style math, exact up to float32 summation);
   * - `'q8'`: rounded to 8 bits first, as the engine that defines the weight format does before its int8 dot
   *   products, so `y = sum_e w_e * x'_e` with `x'` the round trip of each row:
   *   - GGML weights (llama.cpp's CPU backend, vLLM's GGUF kernels): GGML's 8-bit blocks, Q8_0 (32 elements, scale
   *     `f16(amax / 127)`, `roundf`) for q8_0/q4_0/q4_1/q5_0/q5_1, Q8_K (256 elements, scale `max / -127` in float32,
   *     round half to even) for the k-quants (`quantizeActivationsQ8`, csrc/act_q8.h). A block with a NaN or
   *     infinity makes its x' NaN.
   *   - `int8` weights (compressed-tensors W8A8, vLLM's `scaled_int8_quant`): one symmetric int8 scale per row,
   *     dynamic `amax / 127` with codes `sat(rne(x * (127 / amax)))` (a zero row: codes and scale 0), or the static
   *     {@link LinearArgs.activationScale} `s` with codes `sat(rne(x / s))`; `sat` clamps to [-128, 127], `rne` rounds
   *     half to even; x' = codes * scale (`quantizeActivationsInt8`). A row with a NaN or infinity makes its x' NaN.
   *   Faster on CPUs with int8 dot products (AVX2 `vpmaddubsw` / `vpmaddwd`, AVX-512 VNNI `vpdpbusd`).
   * - `'q16'` (`int4` weights, compressed-tensors W4A16): rounded to 16 bits first, `y = sum_e w_e * x'_e` with x'
   *   each row's round trip in blocks of 128 consecutive elements (a row's last block may be shorter): scale
   *   `amax / 32767`, codes `sat(rne(x * (32767 / amax)))` in [-32767, 32767] (a zero block: codes and scale 0), x' =
   *   code * scale (`quantizeActivationBlockQ16`). The error of x' is at most `amax / 65534` per element (~1e-5 of the
   *   outputs, against ~4e-3 for the bf16 activations of GPU W4A16 kernels). A block with a NaN or an infinity makes
   *   its x' NaN. On CPUs with AVX-512 VNNI the 4-bit values meet the codes in exact int32 sums (`vpdpbusd`), about
   *   1.5x the float32 GEMV's speed; elsewhere the kernels multiply x' in float32.
   */
  readonly activations?: LinearActivations | undefined;
  /**
   * `int8` weights with `activations: 'q8'`: the static activation scale (compressed-tensors `input_scale`, one per
   * tensor; finite and > 0 in float32). Absent: dynamic per-row scales. Not allowed with other weights or activations.
   */
  readonly activationScale?: number | undefined;
}

/**
 * How `linear` takes its activations: `'f32'` as given, `'q8'` rounded to 8 bits (GGML and `int8` weights), `'q16'`
 * to 16 bits in blocks of 128 (`int4` weights); see {@link LinearArgs.activations}.
 */
export type LinearActivations = 'f32' | 'q8' | 'q16';

/**
 * `rmsNorm`: `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight` (Llama RMSNorm; the mean of squares is
 * accumulated in float64 by the reference, float32 or better elsewhere). `out` may alias `x` exactly (in place).
 */
export interface RmsNormArgs<A extends Activation = Float32Array> {
  /** Input `[rows, hidden]`. */
  readonly x: A;
  /** Gain `[hidden]` (float32; convert bf16 checkpoints once at load). */
  readonly weight: Float32Array;
  /** Output `[rows, hidden]`; may be the same array as `x`. */
  readonly out: A;
  /** Number of rows, `>= 1`. */
  readonly rows: number;
  /** Row width (hidden size), `>= 1`. */
  readonly hidden: number;
  /** Epsilon added to the mean square, finite and `>= 0` (Llama: `rms_norm_eps`, typically 1e-5 or 1e-6). */
  readonly eps: number;
}

/** `add`: `out[i] = a[i] + b[i]` (residual add, float32). `out` may alias `a` or `b` exactly. */
export interface AddArgs<A extends Activation = Float32Array> {
  readonly a: A;
  readonly b: A;
  /** Output; may be the same array as `a` or `b`. */
  readonly out: A;
  /** Number of elements, `>= 0`. */
  readonly length: number;
}

/**
 * `siluAndMul`: `out[i] = silu(gate[i]) * up[i]` with `silu(g) = g / (1 + exp(-g))` (Llama MLP).
 * `out` may alias `gate` or `up` exactly.
 */
export interface SiluAndMulArgs<A extends Activation = Float32Array> {
  /** Output of `gate_proj`, `[length]`. */
  readonly gate: A;
  /** Output of `up_proj`, `[length]`. */
  readonly up: A;
  /** Output `[length]`; may be the same array as `gate` or `up`. */
  readonly out: A;
  /** Number of elements (`rows * intermediateSize`), `>= 0`. */
  readonly length: number;
}

/**
 * `geluTanhAndMul`: `out[i] = gelu_tanh(gate[i]) * up[i]` with
 * `gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/π) (g + 0.044715 g³)))`: PyTorch's `gelu(approximate='tanh')`, the
 * `gelu_pytorch_tanh` activation of Gemma's GeGLU MLP (vLLM's `gelu_tanh_and_mul`). Same shapes and aliasing rules
 * as {@link SiluAndMulArgs}.
 */
export interface GeluTanhAndMulArgs<A extends Activation = Float32Array> {
  /** Output of `gate_proj`, `[length]`. */
  readonly gate: A;
  /** Output of `up_proj`, `[length]`. */
  readonly up: A;
  /** Output `[length]`; may be the same array as `gate` or `up`. */
  readonly out: A;
  /** Number of elements (`rows * intermediateSize`), `>= 0`. */
  readonly length: number;
}

/** `embedding`: `out[t, :] = table[ids[t], :]` converted to float32. Ids outside `[0, table.rows)` are `OUT_OF_RANGE`. */
export interface EmbeddingArgs<A extends Activation = Float32Array> {
  /** Embedding table `[vocabSize, hiddenSize]`, any {@link WeightDtype} (a quantized table dequantizes the looked-up rows). */
  readonly table: WeightMatrix;
  /** Token ids `[numTokens]`. */
  readonly ids: Int32Array;
  /** Output `[numTokens, table.cols]`. */
  readonly out: A;
  /** Number of tokens, `>= 0`. */
  readonly numTokens: number;
}

/**
 * `rope`: rotate query and key IN PLACE by their token's position, using a precomputed {@link RopeTable}.
 * Only the first `table.rotaryDim` dims of each head rotate; the rest pass through. Each pair becomes
 * `a' = a*cos - b*sin`, `b' = b*cos + a*sin` with `cos`/`sin` read from the float32 table (the reference evaluates
 * this in float64 and rounds once; float32 / FMA evaluation stays within the parity tolerance).
 */
export interface RopeArgs<A extends Activation = Float32Array> {
  /** Query `[numTokens, numHeads, headSize]`, rotated in place. */
  readonly query: A;
  /** Key `[numTokens, numKvHeads, headSize]`, rotated in place. */
  readonly key: A;
  /** Position of each token `[numTokens]`, each in `[0, table.maxPositions)`. */
  readonly positions: Int32Array;
  readonly numTokens: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  /** Precomputed cos/sin table (rope_theta and rope scaling are baked in). */
  readonly table: RopeTable;
  /** Pairing of dims; see {@link RopeStyle}. */
  readonly style: RopeStyle;
}

/**
 * `softmax`: row-wise `out[r, j] = exp(x[r, j] - max_r) / sum_k exp(x[r, k] - max_r)` (logits softmax).
 * `-Infinity` entries get probability 0; a row of all `-Infinity` or containing NaN yields NaN in that row.
 * `out` may alias `x` exactly.
 */
export interface SoftmaxArgs<A extends Activation = Float32Array> {
  /** Logits `[rows, cols]`. */
  readonly x: A;
  /** Probabilities `[rows, cols]`; may be the same array as `x`. */
  readonly out: A;
  readonly rows: number;
  /** Row width (vocabulary size), `>= 1`. */
  readonly cols: number;
}

/**
 * `argmax`: row-wise `out[r] = ` the smallest `j` with `x[r, j] = max_k x[r, k]` (greedy sampling over logits, one row
 * per sequence, without copying or scanning the logits in JavaScript). NaN counts as larger than every number, as in
 * `torch.argmax`: a row with a NaN gives its first NaN's index. `-0` equals `+0`; an all `-Infinity` row gives 0.
 * Bit-exact across backends.
 */
export interface ArgmaxArgs<A extends Activation = Float32Array> {
  /** Logits `[rows, cols]`. */
  readonly x: A;
  /** Index of each row's maximum `[rows]`, in `[0, cols)`. */
  readonly out: Int32Array;
  /** Number of rows, `>= 0`. */
  readonly rows: number;
  /** Row width (vocabulary size), `>= 1` and `<= 2^31 - 1`. */
  readonly cols: number;
}

/**
 * `reshapeAndCache`: write the new tokens' K and V into the paged cache (vLLM `reshape_and_cache_flash`).
 * Token `t` goes to slot `s = slotMapping[t]`: block `floor(s / blockSize)`, offset `s % blockSize`;
 * `s < 0` marks a padding token that is skipped; `s >= numBlocks * blockSize` is `OUT_OF_RANGE`.
 * FP8 caches store `encodeFp8(fround(x / scale), format, 'satfinite')` with scale `cache.kScale` / `cache.vScale`
 * (length 1 = per tensor, length numKvHeads = per kv head); this is bit-identical to `@kvq/fp8` `quantizeScaled`.
 * `bf16` / `f16` caches store round-to-nearest-even bits; `f32` caches copy. Scales are ignored for non-FP8 caches.
 * Write-time-scaled dtypes (`int8_per_token_head`, `int4_g32`, `nvfp4`, ...) compute each token's scales per kv head
 * (per group of 16/32/64 values for `int4_g*` / nvfp4 / q4_0) from the token's own values and store codes and scales in
 * the block (`@kvq/cache` `quantizeKvHead`, byte-exact; nvfp4 also uses the tensor scale `kScale[0]` / `vScale[0]`).
 * Rewriting a slot recomputes its scales. Backends without kernels for such a dtype throw `UNSUPPORTED`.
 */
export interface ReshapeAndCacheArgs<A extends Activation = Float32Array> {
  /** New keys `[numTokens, numKvHeads, headSize]` (after RoPE). */
  readonly key: A;
  /** New values `[numTokens, numKvHeads, headSize]`. */
  readonly value: A;
  /** Destination slot per token `[numTokens]`; `< 0` means skip. */
  readonly slotMapping: Int32Array;
  readonly numTokens: number;
  /** The layer's cache (written in place). */
  readonly cache: KvLayerCache;
}

/**
 * FP8-query mode of {@link PagedAttentionArgs} (Flash Attention 3 semantics, vLLM `q_descale`).
 * The query is quantized to the cache's FP8 format with `cache.qScale`: per tensor (length 1), or per query
 * head (length numHeads) reduced to one scale per GQA group by `max` (as vLLM does for FA3). Scores are
 * `dot(decode(q8), decode(k8)) * qScale_g * kScale_h * softmaxScale`. V and P stay unquantized (P in float32).
 * Requires an FP8 cache.
 */
export interface Fp8QueryOptions {
  /** Saturation used to quantize the query. Default `'satfinite'`. */
  readonly saturation?: Saturation;
}

/**
 * `pagedAttention`: causal attention of a vLLM-style varlen batch over the paged cache. Covers decode (every
 * query length 1, many sequences) and prefill / chunked prefill (many queries per sequence, with a cached prefix).
 *
 * Sequence `s` owns query tokens `[queryStartLoc[s], queryStartLoc[s+1])`; `seqLens[s]` is its context length
 * INCLUDING those new tokens, which must already be in the cache (`reshapeAndCache`). Its query token `i`
 * (of `queryLen`) sits at position `p = seqLen - queryLen + i` and attends to cached positions `j` with
 * `j <= p` and, when `slidingWindow` is set, `j > p - slidingWindow` (so at most `slidingWindow` keys).
 * Position `j` lives in block `blockTables[s * maxBlocksPerSeq + floor(j / blockSize)]` at offset `j % blockSize`.
 * Query head `h` reads kv head `floor(h / (numHeads / numKvHeads))` (GQA / MQA).
 *
 * K and V are ALWAYS read from the cache, dequantized per kv head as `fround(decode(q) * scale)` (vLLM
 * semantics: the current chunk is read back quantized too); for the write-time-scaled dtypes with the scale stored
 * for that token, kv head and group (`@kvq/cache` `dequantizeKvHead`). The softmax is computed in float32 or better
 * with max subtraction. Output `out[t, h, :] = sum_j p_j * v_j`. `fp8Query` needs a per-tensor / per-head FP8 cache.
 */
export interface PagedAttentionArgs<A extends Activation = Float32Array> {
  /** Queries `[numTokens, numHeads, headSize]` (after RoPE), `numTokens = queryStartLoc[numSeqs]`. */
  readonly query: A;
  /** Output `[numTokens, numHeads, headSize]`. Must not overlap `query`. */
  readonly out: A;
  /** The layer's cache (read only). Supplies numKvHeads, headSize, blockSize, dtype, kScale, vScale, qScale. */
  readonly cache: KvLayerCache;
  /** Cumulative query lengths `[numSeqs + 1]`: starts at 0, non-decreasing. */
  readonly queryStartLoc: Int32Array;
  /** Context length per sequence `[numSeqs]`, each `>= queryLen` of that sequence. */
  readonly seqLens: Int32Array;
  /** Block ids `[numSeqs, maxBlocksPerSeq]` row-major; entries past a sequence's last block are ignored. */
  readonly blockTables: Int32Array;
  /** Row stride of `blockTables`, `>= ceil(max(seqLens) / blockSize)`. */
  readonly maxBlocksPerSeq: number;
  /** Number of sequences, `>= 1`. */
  readonly numSeqs: number;
  /** Number of query heads, a positive multiple of `cache.numKvHeads`. */
  readonly numHeads: number;
  /** Multiplier of `q . k`. Default `1 / sqrt(headSize)`. Must be finite and `> 0`. */
  readonly softmaxScale?: number | undefined;
  /** Sliding-window size in tokens (Mistral-style), a positive integer; `undefined` = full causal attention. */
  readonly slidingWindow?: number | undefined;
  /** Enables FP8-query mode (see {@link Fp8QueryOptions}); `undefined` = query stays float32. */
  readonly fp8Query?: Fp8QueryOptions | undefined;
  /**
   * Optional output `[numTokens, numHeads]` (host float32): per query row, the natural log of `sum_j e^(s_j)` over
   * the keys it attends, where `s_j` is the softmax's input (`q . k * softmaxScale`, FP8-query descales included).
   * Lets a caller combine attention over disjoint key sets (vLLM `merge_attn_states`; {@link mergeAttentionStates}).
   * Must not overlap `query` or `out`. Backends that cannot produce it throw `UNSUPPORTED`.
   */
  readonly lse?: Float32Array | undefined;
}

/** `amaxTensor`: `max_i |x[i]|` over `length` elements (0 for length 0). Any NaN makes the result NaN. */
export interface AmaxTensorArgs {
  readonly x: Float32Array;
  readonly length: number;
}

/**
 * `amaxPerHead`: `out[h] = max over tokens t and dims d of |x[t, h, d]|` for `x` `[numTokens, numHeads, headSize]`.
 * With `accumulate: true`, `out[h] = max(out[h], that)` (running calibration, vLLM/llm-compressor static min-max).
 * Any NaN in a head makes that head's result NaN.
 */
export interface AmaxPerHeadArgs {
  readonly x: Float32Array;
  /** Output `[numHeads]`. */
  readonly out: Float32Array;
  readonly numTokens: number;
  readonly numHeads: number;
  readonly headSize: number;
  /** Combine with the existing contents of `out` by max. Default `false` (overwrite). */
  readonly accumulate?: boolean | undefined;
}

/**
 * `quantizeFp8`: bulk `out[i] = encodeFp8(fround(src[i] / scale(i)), format, saturation)`; bit-identical to
 * `@kvq/fp8` `quantizeScaled`. `scale(i)` is chosen by `layout` (per tensor / head / token / token-head).
 */
export interface QuantizeFp8Args {
  readonly src: Float32Array;
  /** Output codes `[length]`. */
  readonly out: Uint8Array;
  readonly length: number;
  /** Scales; their count is fixed by `layout` and `length` (see `@kvq/fp8` `ScaleLayout`). Finite and `> 0`. */
  readonly scales: Float32Array;
  readonly layout: ScaleLayout;
  readonly format: Fp8Format;
  /** Default `'satfinite'`. */
  readonly saturation?: Saturation | undefined;
}

/** `dequantizeFp8`: bulk `out[i] = fround(decodeFp8(src[i], format) * scale(i))`; identical to `@kvq/fp8` `dequantizeScaled`. */
export interface DequantizeFp8Args {
  readonly src: Uint8Array;
  /** Output `[length]`. */
  readonly out: Float32Array;
  readonly length: number;
  readonly scales: Float32Array;
  readonly layout: ScaleLayout;
  readonly format: Fp8Format;
}

// ---------------------------------------------------------------------------------------------------
// Backend
// ---------------------------------------------------------------------------------------------------

/** Describes a backend for logs, `kvq env` and bug reports. */
export interface BackendInfo {
  /** One line, e.g. `'pure TypeScript reference (float64 accumulation)'`. */
  readonly description: string;
  /** Vector ISA in use: `'none'`, `'sse4.2'`, `'avx2'`, `'avx512'`, `'amx'` (avx512 + AMX tiles), `'neon'`, `'neon-dotprod'`, `'cuda'`, `'hip'`, ... */
  readonly simd: string;
  /** Worker threads the backend uses for one op (1 = single threaded). */
  readonly threads: number;
  /** Device name for GPU backends (e.g. `'NVIDIA H100 80GB HBM3'`); `undefined` on CPU. */
  readonly device?: string | undefined;
  /** Version of the backend's native build, if any. */
  readonly version?: string | undefined;
  /**
   * Absolute path of the native binary the backend loaded (e.g. `.../@kvq/kernels-cpu-linux-x64-gnu/kvq_cpu.node`
   * or a local `build/Release/kvq_cpu.node`), so `kvq env` can say which build runs; `undefined` for pure-TS backends.
   */
  readonly binary?: string | undefined;
  /**
   * True when the device's native FP8 formats are FNUZ (AMD gfx94x, MI300-class: vLLM's `is_fp8_fnuz()`). Engines
   * then resolve `fp8` / `fp8_e4m3` / `fp8_e5m2` to `e4m3fnuz` / `e5m2fnuz` and double checkpoint scales, as vLLM
   * does on those GPUs. Absent or false: the OCP formats.
   */
  readonly fp8Fnuz?: boolean | undefined;
}

/**
 * A kernel backend. All methods are synchronous, validate their arguments (throwing {@link KernelError}), and
 * write only into the `out` buffers (or, for `rope`, `reshapeAndCache`, in place as documented).
 */
export interface KernelBackend {
  /** Short unique name: `'reference'`, `'cpu'`, `'cuda'`, ... (what `KVQ_BACKEND` selects). */
  readonly name: string;
  readonly info: BackendInfo;
  /** `y = x W^T (+ b)`; see {@link LinearArgs}. */
  linear(args: LinearArgs<Activation>): void;
  /** Llama RMSNorm; see {@link RmsNormArgs}. */
  rmsNorm(args: RmsNormArgs<Activation>): void;
  /** Residual add; see {@link AddArgs}. */
  add(args: AddArgs<Activation>): void;
  /** `silu(gate) * up`; see {@link SiluAndMulArgs}. */
  siluAndMul(args: SiluAndMulArgs<Activation>): void;
  /** `gelu_tanh(gate) * up` (Gemma); see {@link GeluTanhAndMulArgs}. */
  geluTanhAndMul(args: GeluTanhAndMulArgs<Activation>): void;
  /** Embedding gather; see {@link EmbeddingArgs}. */
  embedding(args: EmbeddingArgs<Activation>): void;
  /** Rotary embedding, in place; see {@link RopeArgs}. */
  rope(args: RopeArgs<Activation>): void;
  /** Row softmax; see {@link SoftmaxArgs}. */
  softmax(args: SoftmaxArgs<Activation>): void;
  /** Row-wise index of the maximum (greedy sampling); see {@link ArgmaxArgs}. */
  argmax(args: ArgmaxArgs<Activation>): void;
  /** Write K/V into the paged cache (quantizing for FP8); see {@link ReshapeAndCacheArgs}. */
  reshapeAndCache(args: ReshapeAndCacheArgs<Activation>): void;
  /** Paged causal attention (decode and prefill); see {@link PagedAttentionArgs}. */
  pagedAttention(args: PagedAttentionArgs<Activation>): void;
  /** `max |x|`; see {@link AmaxTensorArgs}. */
  amaxTensor(args: AmaxTensorArgs): number;
  /** Per-head `max |x|`; see {@link AmaxPerHeadArgs}. */
  amaxPerHead(args: AmaxPerHeadArgs): void;
  /** Bulk scaled FP8 quantization; see {@link QuantizeFp8Args}. */
  quantizeFp8(args: QuantizeFp8Args): void;
  /** Bulk scaled FP8 dequantization; see {@link DequantizeFp8Args}. */
  dequantizeFp8(args: DequantizeFp8Args): void;
  /**
   * Optional: the vocabulary pass of token sampling over one host logits row (`./sample-buckets.ts`): bucket masses
   * and the candidate count. A backend without it leaves it and {@link sampleBucketIds} out, and callers run
   * `sampleBucketsReference` and `sampleBucketIdsReference`, which give the same bits. A backend has both or neither.
   */
  sampleBuckets?(args: SampleBucketsArgs): SampleBucketsResult;
  /** Optional, with {@link sampleBuckets}: the candidate ids of one weight bucket and their weights; returns how many. */
  sampleBucketIds?(args: SampleBucketIdsArgs): number;
  /**
   * Optional, with {@link sampleBuckets}: one token drawn from a host logits row (`./sample-draw.ts`): the vocabulary
   * pass, top-p's cut and the draw in one call; -1 when there is no candidate. Without it callers run
   * `sampleDrawReference`, which draws the same token for the same `u`.
   */
  sampleDraw?(args: SampleDrawArgs): number;
  /**
   * Device memory (GPU backends): arrays that stay on the device between ops, and KV pools living there; see
   * ./device.ts. Absent on backends that compute on host memory (CPU, reference).
   */
  readonly memory?: DeviceMemory | undefined;
  /** Release native resources (thread pool, device memory). Optional; calling it twice is harmless. */
  dispose?(): void;
}

/** Names of the ops of {@link KernelBackend} (for reports, benchmarks and parity suites). */
export type KernelOpName = Exclude<keyof KernelBackend, 'name' | 'info' | 'dispose' | 'memory' | 'sampleBuckets' | 'sampleBucketIds' | 'sampleDraw'>;

/** Every op name, in contract order. */
export const KERNEL_OPS: readonly KernelOpName[] = [
  'linear',
  'rmsNorm',
  'add',
  'siluAndMul',
  'geluTanhAndMul',
  'embedding',
  'rope',
  'softmax',
  'argmax',
  'reshapeAndCache',
  'pagedAttention',
  'amaxTensor',
  'amaxPerHead',
  'quantizeFp8',
  'dequantizeFp8',
];

/** Options a backend module's `createBackend` accepts. */
export interface BackendCreateOptions {
  /** Worker threads (native CPU backends). Default: the backend's choice (usually available cores). */
  readonly threads?: number | undefined;
}

/**
 * Shape of a backend package's module (e.g. `@kvq/kernels-cpu`), as the loader imports it.
 * `createBackend` must throw (or reject) with a reason when the backend cannot run here (no binary, wrong CPU).
 */
export interface BackendModule {
  createBackend(options?: BackendCreateOptions): KernelBackend | Promise<KernelBackend>;
}
