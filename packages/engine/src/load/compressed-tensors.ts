/**
 * compressed-tensors quantized weights (the checkpoints llm-compressor writes): the `quantization_config` parser
 * (formats, `config_groups` targets, `ignore` lists) and the reader turning a quantized Linear's stored tensors
 * (`weight` + `weight_scale`, or `weight_packed` + `weight_shape` + `weight_scale` [+ `weight_zero_point`]) into one
 * engine {@link Tensor} of the kernel contract's `fp8_e4m3` / `int8` / `int4` dtype, kept in its stored form.
 * @see docs/spec/compressed-tensors.md
 * @module
 */
import { EngineError, describeValue } from '../errors.js';
import type { SafetensorsTensorInfo } from '../formats/safetensors.js';
import type { ByteSource } from '../io/source.js';
import { bf16ToNumber, f16ToNumber, type Tensor } from '../tensor.js';

/** `quantization_config.format` values kvq reads (compressed-tensors `CompressionFormat`). */
type CompressedTensorsFormat = 'dense' | 'float-quantized' | 'int-quantized' | 'naive-quantized' | 'pack-quantized';

const KNOWN_FORMATS: readonly string[] = ['dense', 'float-quantized', 'int-quantized', 'naive-quantized', 'pack-quantized'];

/** The weight half of a compressed-tensors `QuantizationArgs`, validated. */
interface WeightQuantArgs {
  readonly numBits: number;
  readonly type: 'int' | 'float';
  readonly symmetric: boolean;
  readonly strategy: 'tensor' | 'channel' | 'group';
  /** Columns per group (`strategy: 'group'` only). */
  readonly groupSize: number | undefined;
}

/** One `config_groups` entry: what it targets and how its weights are stored. */
export interface CompressedTensorsScheme {
  /** The `config_groups` key (e.g. `group_0`), for messages. */
  readonly name: string;
  readonly targets: readonly string[];
  readonly weights: WeightQuantArgs;
  /** The scheme's own `format`, else the top-level one (`mixed-precision` checkpoints set it per scheme). */
  readonly format: CompressedTensorsFormat;
  /** Whether the scheme quantizes activations statically (`input_activations.dynamic: false`): `input_scale` tensors. */
  readonly staticInputScale: boolean;
  /**
   * int8 weights with int8 activations (W8A8, `input_activations` `type: int`, 8 bits, symmetric): kvq quantizes the
   * activations as vLLM does (dynamic per token, or the static `input_scale`). `undefined`: float activations (W8A16,
   * FP8 W8A8 on the CPU: stated in the engine README).
   */
  readonly int8Activations: { readonly dynamic: boolean } | undefined;
}

/** A parsed `quantization_config` of `quant_method: compressed-tensors` with weight schemes. */
export interface CompressedTensorsConfig {
  readonly file: string;
  readonly format: string;
  readonly schemes: readonly CompressedTensorsScheme[];
  readonly ignore: readonly string[];
}

const bad = (file: string, field: string, message: string, code: 'INVALID_CONFIG' | 'UNSUPPORTED_FORMAT' = 'INVALID_CONFIG'): EngineError =>
  new EngineError(code, `${file}: quantization_config.${field} ${message}`, { file, field: `quantization_config.${field}` });

function parseWeightArgs(raw: unknown, file: string, field: string): WeightQuantArgs {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(file, field, `must be an object, got ${describeValue(raw)}`);
  const a = raw as Record<string, unknown>;
  const numBits = a.num_bits ?? 8;
  const type = a.type ?? 'int';
  const symmetric = a.symmetric ?? true;
  if (numBits !== 4 && numBits !== 8) throw bad(file, `${field}.num_bits`, `is ${describeValue(numBits)}; kvq reads 4- and 8-bit weights`, 'UNSUPPORTED_FORMAT');
  if (type !== 'int' && type !== 'float') throw bad(file, `${field}.type`, `is ${describeValue(type)}; expected "int" or "float"`);
  if (typeof symmetric !== 'boolean') throw bad(file, `${field}.symmetric`, `must be a boolean, got ${describeValue(symmetric)}`);
  if (type === 'float' && numBits !== 8) throw bad(file, `${field}.num_bits`, `is ${numBits} for float weights; kvq reads FP8 (8) only`, 'UNSUPPORTED_FORMAT');
  let strategy = a.strategy;
  const groupSize = a.group_size ?? undefined;
  if (strategy === undefined || strategy === null) strategy = groupSize !== undefined && groupSize !== null ? 'group' : 'tensor';
  if (strategy !== 'tensor' && strategy !== 'channel' && strategy !== 'group') {
    throw bad(file, `${field}.strategy`, `is ${describeValue(strategy)}; kvq reads tensor, channel and group weight scales`, 'UNSUPPORTED_FORMAT');
  }
  if (strategy === 'group' && !(Number.isInteger(groupSize) && (groupSize as number) > 0)) {
    throw bad(file, `${field}.group_size`, `must be a positive integer for strategy "group", got ${describeValue(groupSize)}`);
  }
  const actorder = a.actorder ?? null;
  if (actorder !== null && actorder !== false && actorder !== 'weight' && actorder !== 'static') {
    // "group" / "dynamic" / true store a permutation in weight_g_idx.
    throw bad(file, `${field}.actorder`, `is ${describeValue(actorder)}: activation-ordered groups (weight_g_idx) are not supported`, 'UNSUPPORTED_FORMAT');
  }
  return { numBits, type, symmetric, strategy, groupSize: strategy === 'group' ? (groupSize as number) : undefined };
}

/**
 * The activation half of an int8-weight scheme: absent / null = float activations (W8A16); `type: "int"`, 8 bits,
 * symmetric = W8A8 (`dynamic: true`: a scale per token, as vLLM's `scaled_int8_quant` computes whatever the
 * `strategy`; `dynamic: false`: the static per-tensor `input_scale`).
 * @throws EngineError `UNSUPPORTED_FORMAT` for asymmetric, non-int or non-8-bit activations, `INVALID_CONFIG` for
 *   malformed fields, each naming the field.
 */
function parseInt8Activations(raw: unknown, file: string, field: string): { dynamic: boolean } | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw bad(file, field, `must be an object or null, got ${describeValue(raw)}`);
  const a = raw as Record<string, unknown>;
  const type = a.type ?? 'int';
  const numBits = a.num_bits ?? 8;
  const symmetric = a.symmetric ?? true;
  const dynamic = a.dynamic ?? false;
  if (type !== 'int') throw bad(file, `${field}.type`, `is ${describeValue(type)}; int8 weights run with float activations (none) or int8 ones`, 'UNSUPPORTED_FORMAT');
  if (numBits !== 8) throw bad(file, `${field}.num_bits`, `is ${describeValue(numBits)}; kvq quantizes activations of int8 weights to 8 bits only`, 'UNSUPPORTED_FORMAT');
  if (symmetric !== true) {
    throw bad(file, `${field}.symmetric`, `is ${describeValue(symmetric)}: asymmetric int8 activations (zero points) are not supported`, 'UNSUPPORTED_FORMAT');
  }
  if (typeof dynamic !== 'boolean') throw bad(file, `${field}.dynamic`, `must be a boolean, got ${describeValue(dynamic)}`);
  return { dynamic };
}

/**
 * Parse `config.json`'s `quantization_config` when it is a compressed-tensors config with weight schemes.
 * @returns `undefined` for other (or absent) quantization configs and for compressed-tensors configs without
 *   weight quantization (KV-cache-only checkpoints).
 * @throws EngineError `UNSUPPORTED_FORMAT` (unknown `format`, unsupported bit width / strategy / act-order),
 *   `INVALID_CONFIG` (malformed fields), each naming the field.
 */
export function parseCompressedTensorsConfig(qc: unknown, file: string): CompressedTensorsConfig | undefined {
  if (typeof qc !== 'object' || qc === null || Array.isArray(qc)) return undefined;
  const q = qc as Record<string, unknown>;
  if (q.quant_method !== 'compressed-tensors') return undefined;
  const groups = q.config_groups;
  if (groups === undefined || groups === null) return undefined;
  if (typeof groups !== 'object' || Array.isArray(groups)) throw bad(file, 'config_groups', `must be an object, got ${describeValue(groups)}`);
  const format = q.format ?? 'dense';
  if (typeof format !== 'string' || (!KNOWN_FORMATS.includes(format) && format !== 'mixed-precision')) {
    throw bad(file, 'format', `${describeValue(format)} is not supported (${KNOWN_FORMATS.join(', ')}, mixed-precision)`, 'UNSUPPORTED_FORMAT');
  }
  const ignore = q.ignore ?? [];
  if (!Array.isArray(ignore) || !ignore.every((x) => typeof x === 'string')) throw bad(file, 'ignore', `must be a list of strings, got ${describeValue(ignore)}`);
  const schemes: CompressedTensorsScheme[] = [];
  for (const [name, raw] of Object.entries(groups as Record<string, unknown>)) {
    const field = `config_groups.${name}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(file, field, `must be an object, got ${describeValue(raw)}`);
    const g = raw as Record<string, unknown>;
    const targets = g.targets;
    if (!Array.isArray(targets) || !targets.every((x) => typeof x === 'string')) throw bad(file, `${field}.targets`, `must be a list of strings, got ${describeValue(targets)}`);
    if (g.weights === undefined || g.weights === null) continue; // activation-only scheme: weights stay dense
    const weights = parseWeightArgs(g.weights, file, `${field}.weights`);
    const own = g.format ?? format;
    if (typeof own !== 'string' || !KNOWN_FORMATS.includes(own)) {
      throw bad(file, `${field}.format`, `${describeValue(own)} is not supported (${KNOWN_FORMATS.join(', ')})`, 'UNSUPPORTED_FORMAT');
    }
    const ia = g.input_activations as Record<string, unknown> | null | undefined;
    const staticInputScale = typeof ia === 'object' && ia !== null && ia.dynamic === false;
    const int8Activations = weights.type === 'int' && weights.numBits === 8 ? parseInt8Activations(ia, file, `${field}.input_activations`) : undefined;
    schemes.push({ name, targets: targets as string[], weights, format: own as CompressedTensorsFormat, staticInputScale, int8Activations });
  }
  if (schemes.length === 0) return undefined;
  return { file, format, schemes, ignore: ignore as string[] };
}

const regexCache = new Map<string, RegExp>();

/**
 * compressed-tensors' `match_name`: `re:PATTERN` matches when the regex matches at the start of the name (Python
 * `re.match`), anything else must equal the name. A Python pattern JavaScript cannot compile is `INVALID_CONFIG`.
 */
function matchName(name: string, target: string, file: string, field: string): boolean {
  if (!target.startsWith('re:')) return target === name;
  let re = regexCache.get(target);
  if (!re) {
    try {
      re = new RegExp(`^(?:${target.slice(3)})`);
    } catch (cause) {
      throw new EngineError('INVALID_CONFIG', `${file}: quantization_config.${field} regex ${describeValue(target)} does not compile (${(cause as Error).message})`, {
        file,
        field: `quantization_config.${field}`,
        cause,
      });
    }
    regexCache.set(target, re);
  }
  return re.test(name);
}

/** Class names a Llama-family projection module answers to (`torch.nn.Linear`; vLLM's `LinearBase` matches `Linear`). */
const LINEAR_CLASSES = new Set(['Linear']);

/**
 * The scheme that quantizes a Linear module (`model.layers.0.self_attn.q_proj`, `lm_head`), or `undefined` when
 * no group targets it or the `ignore` list names it. Matching follows compressed-tensors `is_match`: an exact name,
 * a `re:` regex, or the class name `Linear`; the most specific match wins (exact, then regex, then class), and
 * among equals the first group.
 */
export function schemeForModule(config: CompressedTensorsConfig, module: string): CompressedTensorsScheme | undefined {
  const matches = (targets: readonly string[], field: string): number => {
    let best = 0;
    for (const t of targets) {
      if (matchName(module, t, config.file, field)) best = Math.max(best, t.startsWith('re:') ? 2 : 3);
      else if (LINEAR_CLASSES.has(t)) best = Math.max(best, 1);
    }
    return best;
  };
  if (matches(config.ignore, 'ignore') > 0) return undefined;
  let chosen: CompressedTensorsScheme | undefined;
  let rank = 0;
  for (const s of config.schemes) {
    const r = matches(s.targets, `config_groups.${s.name}.targets`);
    if (r > rank) {
      rank = r;
      chosen = s;
    }
  }
  return chosen;
}

/** Where a checkpoint tensor lives. */
export interface StoredTensor {
  readonly source: ByteSource;
  readonly info: SafetensorsTensorInfo;
}

/** The names of the stored tensors a quantized module of `scheme` needs (present or not) and may have. */
export function compressedTensorNames(module: string, scheme: CompressedTensorsScheme): { required: string[]; optional: string[] } {
  const w = scheme.weights;
  if (scheme.format === 'pack-quantized') {
    return {
      required: [`${module}.weight_packed`, `${module}.weight_shape`, `${module}.weight_scale`, ...(w.symmetric ? [] : [`${module}.weight_zero_point`])],
      optional: [`${module}.input_scale`, `${module}.weight_g_idx`],
    };
  }
  return {
    required: [`${module}.weight`, `${module}.weight_scale`, ...(w.symmetric ? [] : [`${module}.weight_zero_point`])],
    optional: [`${module}.input_scale`, `${module}.weight_g_idx`],
  };
}

async function bytesOf(t: StoredTensor): Promise<Uint8Array> {
  const n = t.info.end - t.info.begin;
  const view = t.source.view(t.info.begin, n);
  if (view) return view;
  const out = new Uint8Array(n);
  await t.source.readInto(t.info.begin, out);
  return out;
}

/** A BF16 / F16 / F32 tensor as a new Float32Array (scales are small). */
async function floatsOf(t: StoredTensor): Promise<Float32Array> {
  const b = await bytesOf(t);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const { dtype, name } = t.info;
  const width = dtype === 'F32' ? 4 : dtype === 'BF16' || dtype === 'F16' ? 2 : 0;
  if (width === 0) {
    throw new EngineError('UNSUPPORTED_DTYPE', `${t.source.name}: tensor ${name} has dtype ${dtype}; a scale must be F32, F16 or BF16`, {
      file: t.source.name,
      field: name,
    });
  }
  const out = new Float32Array(b.byteLength / width);
  for (let i = 0; i < out.length; i++) {
    out[i] = width === 4 ? dv.getFloat32(4 * i, true) : dtype === 'BF16' ? bf16ToNumber(dv.getUint16(2 * i, true)) : f16ToNumber(dv.getUint16(2 * i, true));
  }
  return out;
}

/** An integer tensor (I64 / I32 / I16 / I8) as numbers. */
async function integersOf(t: StoredTensor): Promise<number[]> {
  const b = await bytesOf(t);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const width = ({ I64: 8, I32: 4, I16: 2, I8: 1 } as Record<string, number>)[t.info.dtype];
  if (width === undefined) {
    throw new EngineError('UNSUPPORTED_DTYPE', `${t.source.name}: tensor ${t.info.name} has dtype ${t.info.dtype}; expected an integer dtype`, {
      file: t.source.name,
      field: t.info.name,
    });
  }
  const out: number[] = [];
  for (let i = 0; i < b.byteLength / width; i++) {
    out.push(width === 8 ? Number(dv.getBigInt64(8 * i, true)) : width === 4 ? dv.getInt32(4 * i, true) : width === 2 ? dv.getInt16(2 * i, true) : dv.getInt8(i));
  }
  return out;
}

function expectDtype(t: StoredTensor, allowed: readonly string[], why: string): void {
  if (!allowed.includes(t.info.dtype)) {
    throw new EngineError('UNSUPPORTED_DTYPE', `${t.source.name}: tensor ${t.info.name} has dtype ${t.info.dtype}; ${why} must be ${allowed.join(' or ')}`, {
      file: t.source.name,
      field: t.info.name,
    });
  }
}

function shapeError(t: StoredTensor, want: string): EngineError {
  return new EngineError('SHAPE_MISMATCH', `${t.source.name}: tensor ${t.info.name} has shape [${t.info.shape.join(', ')}] but the scheme implies ${want}`, {
    file: t.source.name,
    field: t.info.name,
  });
}

/**
 * Validate a `weight_scale` against the strategy and return it as float32 in the kernel contract's shape: `[1]`
 * (tensor; stored `[1]` or a scalar `[]`), `[rows]` (channel; stored `[rows, 1]` or `[rows]`), `[rows, groups]`.
 */
async function readScale(t: StoredTensor, rows: number, cols: number, w: WeightQuantArgs): Promise<{ scale: Float32Array; groupSize: number }> {
  const s = t.info.shape;
  const size = s.reduce((a, b) => a * b, 1);
  if (w.strategy === 'tensor') {
    if (size !== 1 || s.length > 2) throw shapeError(t, '[1] (one scale per tensor)');
    return { scale: await floatsOf(t), groupSize: cols };
  }
  if (w.strategy === 'channel') {
    const ok = (s.length === 2 && s[0] === rows && s[1] === 1) || (s.length === 1 && s[0] === rows);
    if (!ok) throw shapeError(t, `[${rows}, 1] (one scale per output channel)`);
    return { scale: await floatsOf(t), groupSize: cols };
  }
  const g = w.groupSize!;
  if (cols % g !== 0) {
    throw new EngineError('SHAPE_MISMATCH', `${t.source.name}: group_size ${g} does not divide the ${cols} input columns of ${t.info.name.replace(/\.weight_scale$/, '')}`, {
      file: t.source.name,
      field: t.info.name,
    });
  }
  if (s.length !== 2 || s[0] !== rows || s[1] !== cols / g) throw shapeError(t, `[${rows}, ${cols / g}] (group_size ${g})`);
  return { scale: await floatsOf(t), groupSize: g };
}

/** Static activation scale (`input_scale`), kept as float32 (not applied: activations stay float32). */
async function readInputScale(t: StoredTensor | undefined): Promise<Float32Array | undefined> {
  return t ? floatsOf(t) : undefined;
}

/**
 * The W8A8 activation quantization of an int8 module (see {@link CompressedTensorsScheme.int8Activations}): dynamic,
 * or static with the module's one `input_scale` (finite, > 0).
 * @throws EngineError `MISSING_TENSOR` (static without `input_scale`), `SHAPE_MISMATCH` (not one value), `MALFORMED`
 *   (a scale that is not a finite float32 > 0), naming file and tensor.
 */
function int8ActivationsOfModule(
  module: string,
  scheme: CompressedTensorsScheme,
  t: StoredTensor | undefined,
  scale: Float32Array | undefined,
  lookup: (name: string) => StoredTensor | undefined,
): Tensor['int8Activations'] {
  const a = scheme.int8Activations;
  if (!a) return undefined;
  if (a.dynamic) return {};
  const file = (lookup(`${module}.weight`) ?? lookup(`${module}.weight_packed`))?.source.name ?? 'checkpoint';
  if (!t || !scale) {
    throw new EngineError('MISSING_TENSOR', `${file}: tensor ${module}.input_scale is missing (quantization_config group ${scheme.name}: static int8 activations)`, {
      file,
      field: `${module}.input_scale`,
    });
  }
  if (scale.length !== 1) throw shapeError(t, '[1] or [] (one static activation scale per tensor)');
  const v = scale[0]!;
  if (!(v > 0) || !Number.isFinite(v)) {
    throw new EngineError('MALFORMED', `${t.source.name}: tensor ${t.info.name} is ${v}; a static activation scale must be finite and > 0`, { file: t.source.name, field: t.info.name });
  }
  return { staticScale: v };
}

/**
 * Unpack 4-bit zero points `[rows, groups]` to `Int8Array` values in [-8, 7]: compressed-tensors packs them along
 * the OUTPUT dim (`pack_to_int32(zp, 4, packed_dim=0)`: int32 `[ceil(rows / 8), groups]`, row `r` in bits
 * `4 * (r % 8)` of word `[r / 8, g]`, stored `+ 8`); an unpacked I8 `[rows, groups]` (naive-quantized) is read as is.
 */
async function readZeroPoints(t: StoredTensor, rows: number, groups: number): Promise<Int8Array> {
  const s = t.info.shape;
  const out = new Int8Array(rows * groups);
  if (t.info.dtype === 'I32') {
    if (s.length !== 2 || s[0] !== Math.ceil(rows / 8) || s[1] !== groups) throw shapeError(t, `[${Math.ceil(rows / 8)}, ${groups}] (int4 zero points packed 8 rows per int32)`);
    const words = await integersOf(t);
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < groups; g++) out[r * groups + g] = ((words[(r >> 3) * groups + g]! >>> (4 * (r & 7))) & 0xf) - 8;
    }
    return out;
  }
  expectDtype(t, ['I32', 'I8'], 'an int4 zero point');
  if (s.length !== 2 || s[0] !== rows || s[1] !== groups) throw shapeError(t, `[${rows}, ${groups}]`);
  const v = await integersOf(t);
  for (let i = 0; i < v.length; i++) {
    if (v[i]! < -8 || v[i]! > 7) throw new EngineError('MALFORMED', `${t.source.name}: tensor ${t.info.name} value ${v[i]} at ${i} is outside the int4 range [-8, 7]`, { file: t.source.name, field: t.info.name });
    out[i] = v[i]!;
  }
  return out;
}

/**
 * Read one quantized Linear weight `[rows, cols]` (`module` is its name without `.weight`) in its stored form.
 * - `float-quantized` (and naive FP8): `weight` F8_E4M3 `[rows, cols]` → `fp8_e4m3` codes (a view, no copy).
 * - `int-quantized` / naive 8-bit int: `weight` I8 → `int8` (symmetric only).
 * - `pack-quantized` 4-bit: `weight_packed` I32 `[rows, cols / 8]`: little-endian words of 8 nibbles, element `8w + k`
 *   in bits `4k`, stored `q + 8`: byte for byte the contract's `int4` layout (a view, no copy) when `cols % 8 == 0`;
 *   8-bit packs (4 per word) become `int8`.
 * - naive 4-bit int: `weight` I8 values in [-8, 7], packed here into the `int4` nibbles (half the bytes).
 * Scales become float32; `weight_zero_point` is unpacked (int4 asymmetric only).
 * @throws EngineError `MISSING_TENSOR` (a required part is absent), `UNSUPPORTED_DTYPE`, `SHAPE_MISMATCH` (scale /
 *   zero point / packed shapes, group size not dividing), `UNSUPPORTED_FORMAT` (`weight_g_idx`, asymmetric 8-bit,
 *   group-wise FP8 / INT8), `MALFORMED` (weight_shape disagreeing with the config), each naming file and tensor.
 */
export async function readCompressedWeight(
  module: string,
  rows: number,
  cols: number,
  scheme: CompressedTensorsScheme,
  lookup: (name: string) => StoredTensor | undefined,
): Promise<Tensor> {
  const w = scheme.weights;
  const need = (name: string): StoredTensor => {
    const t = lookup(name);
    if (!t) {
      const any = lookup(`${module}.weight`) ?? lookup(`${module}.weight_packed`);
      throw new EngineError(
        'MISSING_TENSOR',
        `${any?.source.name ?? 'checkpoint'}: tensor ${name} is missing (quantization_config group ${scheme.name}, format ${scheme.format}, ${w.symmetric ? 'symmetric' : 'asymmetric: zero points required'})`,
        { ...(any ? { file: any.source.name } : {}), field: name },
      );
    }
    return t;
  };
  const gIdx = lookup(`${module}.weight_g_idx`);
  if (gIdx) {
    throw new EngineError('UNSUPPORTED_FORMAT', `${gIdx.source.name}: tensor ${gIdx.info.name}: activation-ordered groups (weight_g_idx) are not supported`, {
      file: gIdx.source.name,
      field: gIdx.info.name,
    });
  }
  const inputScaleT = lookup(`${module}.input_scale`);
  const inputScale = await readInputScale(inputScaleT);
  const int8Activations = int8ActivationsOfModule(module, scheme, inputScaleT, inputScale, lookup);
  const withInput = (t: Tensor): Tensor => ({ ...t, ...(inputScale ? { inputScale } : {}), ...(t.dtype === 'int8' && int8Activations ? { int8Activations } : {}) });
  const scaleT = need(`${module}.weight_scale`);
  if (w.type === 'float' || (w.type === 'int' && w.numBits === 8)) {
    if (!w.symmetric) {
      throw new EngineError('UNSUPPORTED_FORMAT', `${scaleT.source.name}: ${module}: asymmetric ${w.type}${w.numBits} weights are not supported (zero points only for int4)`, {
        file: scaleT.source.name,
        field: `${module}.weight_zero_point`,
      });
    }
    if (w.strategy === 'group') {
      throw new EngineError('UNSUPPORTED_FORMAT', `${scaleT.source.name}: ${module}: group-wise ${w.type}${w.numBits} weight scales are not supported (tensor or channel)`, {
        file: scaleT.source.name,
        field: `${module}.weight_scale`,
      });
    }
  }
  const read = await readScale(scaleT, rows, cols, w);
  const groupSize = read.groupSize;
  // int4 keeps one scale per (row, group): a per-tensor int4 scale is broadcast to the rows (rows floats).
  const scale = w.type === 'int' && w.numBits === 4 && read.scale.length === 1 ? new Float32Array(rows).fill(read.scale[0]!) : read.scale;
  if (scheme.format === 'pack-quantized') {
    const packed = need(`${module}.weight_packed`);
    const shapeT = need(`${module}.weight_shape`);
    const dims = await integersOf(shapeT);
    if (dims.length !== 2 || dims[0] !== rows || dims[1] !== cols) {
      throw new EngineError('MALFORMED', `${shapeT.source.name}: tensor ${shapeT.info.name} is [${dims.join(', ')}] but the config implies [${rows}, ${cols}]`, {
        file: shapeT.source.name,
        field: shapeT.info.name,
      });
    }
    expectDtype(packed, ['I32'], 'weight_packed');
    const perWord = 32 / w.numBits;
    const words = Math.ceil(cols / perWord);
    if (packed.info.shape.length !== 2 || packed.info.shape[0] !== rows || packed.info.shape[1] !== words) {
      throw shapeError(packed, `[${rows}, ${words}] (${perWord} ${w.numBits}-bit values per int32)`);
    }
    const bytes = await bytesOf(packed);
    const rowBytes = words * 4;
    if (w.numBits === 8) {
      // 4 bytes per word, element k in bits 8k, stored q + 128: subtract the offset into a new int8 array.
      const data = new Int8Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[r * cols + c] = bytes[r * rowBytes + c]! - 128;
      return withInput({ dtype: 'int8', shape: [rows, cols], data, scale });
    }
    if (cols % 2 !== 0) throw shapeError(packed, 'an even number of input columns for int4');
    let data = bytes;
    if (rowBytes !== cols / 2) {
      data = new Uint8Array((rows * cols) / 2);
      for (let r = 0; r < rows; r++) data.set(bytes.subarray(r * rowBytes, r * rowBytes + cols / 2), (r * cols) / 2);
    }
    const zeroPoint = w.symmetric ? undefined : await readZeroPoints(need(`${module}.weight_zero_point`), rows, cols / groupSize);
    return withInput({ dtype: 'int4', shape: [rows, cols], data, scale, groupSize, ...(zeroPoint ? { zeroPoint } : {}) });
  }
  const weight = need(`${module}.weight`);
  if (weight.info.shape.length !== 2 || weight.info.shape[0] !== rows || weight.info.shape[1] !== cols) throw shapeError(weight, `[${rows}, ${cols}]`);
  if (w.type === 'float') {
    expectDtype(weight, ['F8_E4M3'], `an FP8 weight (group ${scheme.name})`);
    return withInput({ dtype: 'fp8_e4m3', shape: [rows, cols], data: await bytesOf(weight), scale });
  }
  expectDtype(weight, ['I8'], `an int${w.numBits} weight (group ${scheme.name}, format ${scheme.format})`);
  const raw = await bytesOf(weight);
  const values = new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength);
  if (w.numBits === 8) return withInput({ dtype: 'int8', shape: [rows, cols], data: values, scale });
  if (cols % 2 !== 0) throw shapeError(weight, 'an even number of input columns for int4');
  const data = new Uint8Array((rows * cols) / 2);
  for (let i = 0; i < rows * cols; i++) {
    const q = values[i]!;
    if (q < -8 || q > 7) throw new EngineError('MALFORMED', `${weight.source.name}: tensor ${weight.info.name} value ${q} at ${i} is outside the int4 range [-8, 7]`, { file: weight.source.name, field: weight.info.name });
    data[i >> 1] = data[i >> 1]! | ((q + 8) << (4 * (i & 1)));
  }
  const zeroPoint = w.symmetric ? undefined : await readZeroPoints(need(`${module}.weight_zero_point`), rows, cols / groupSize);
  return withInput({ dtype: 'int4', shape: [rows, cols], data, scale, groupSize, ...(zeroPoint ? { zeroPoint } : {}) });
}
