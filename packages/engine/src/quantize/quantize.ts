/**
 * `quantizeModel`: a dense model (any path `loadModel` reads, or a loaded model) to a compressed-tensors folder
 * (`fp8`, `w4a16`, `w8a8`) or a GGUF file (`q8_0`, `q4_0`, `q4_1`, `q5_0`, `q5_1`, `q4_k_m`, `q5_k_m`, `q6_k`). What
 * `kvq quantize` runs.
 * @module
 */
import { join } from 'node:path';

import { prepareOutputFolder, writeHfSideFiles } from '../convert/convert.js';
import { writeModelAsGguf, type GgufOutType } from '../convert/to-gguf.js';
import { EngineError } from '../errors.js';
import { writeSafetensors } from '../formats/safetensors.js';
import { pathKind } from '../io/source.js';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel, LoadModelOptions } from '../load/types.js';
import { ggufTensorType, isCompressedTensorsScheme, LLAMA_FTYPE, type QuantizeScheme } from './schemes.js';
import { compressedTensorsCheckpoint } from './write-compressed-tensors.js';

/** Options of {@link quantizeModel}. */
export interface QuantizeModelOptions extends LoadModelOptions {
  /** Replace the files of a non-empty output folder (compressed-tensors) or an existing file (GGUF). Default false. */
  overwrite?: boolean;
  /** `w4a16` only: int4 group size. Default 128, halved until it divides every Linear's input size. */
  groupSize?: number;
}

/** What {@link quantizeModel} wrote. */
export interface QuantizeResult {
  readonly scheme: QuantizeScheme;
  /** `'compressed-tensors'` folder or `'gguf'` file. */
  readonly format: 'compressed-tensors' | 'gguf';
  /** The folder or file written. */
  readonly out: string;
  /** Files written (folder-relative for compressed-tensors; the file itself for GGUF). */
  readonly files: readonly string[];
  /** Tensor name → stored type (`fp8_e4m3`, `int4`, `q4_k`, `f32`, ...), for reports and tests. */
  readonly types: ReadonlyMap<string, string>;
  /** `w4a16`: the group size used. */
  readonly groupSize: number | undefined;
}

/**
 * Quantize a dense model.
 * @throws EngineError `INVALID_ARGUMENT` (quantized source, a non-empty output without `overwrite`, shapes a scheme
 *   cannot hold), `IO_ERROR`, and any `loadModel` error.
 */
export async function quantizeModel(source: string | LoadedModel, out: string, scheme: QuantizeScheme, options: QuantizeModelOptions = {}): Promise<QuantizeResult> {
  if (isCompressedTensorsScheme(scheme)) {
    await prepareOutputFolder(out, options.overwrite === true);
    const model = typeof source === 'string' ? await loadModel(source, options) : source;
    const checkpoint = compressedTensorsCheckpoint(model, scheme, { groupSize: options.groupSize });
    const files = await writeHfSideFiles(model, out, { quantization_config: checkpoint.quantizationConfig });
    await writeSafetensors(join(out, 'model.safetensors'), checkpoint.tensors, { format: 'pt' });
    const types = new Map<string, string>();
    for (const [name, t] of checkpoint.tensors) types.set(name, 'safetensorsDtype' in t ? t.safetensorsDtype : t.dtype);
    return { scheme, format: 'compressed-tensors', out, files: [...files, 'model.safetensors'], types, groupSize: checkpoint.groupSize };
  }
  if (!options.overwrite) {
    if ((await pathKind(out)) !== undefined) throw new EngineError('INVALID_ARGUMENT', `${out}: already exists (pass overwrite: true to replace it)`, { file: out });
  }
  const model = typeof source === 'string' ? await loadModel(source, options) : source;
  const tied = model.config.tieWordEmbeddings;
  const result = await writeModelAsGguf(model, out, {
    typeOf: (name, cols): GgufOutType => ggufTensorType(scheme, name, cols, model.config.numLayers, tied),
    fileType: LLAMA_FTYPE[scheme],
  });
  return { scheme, format: 'gguf', out, files: [out], types: result.types, groupSize: undefined };
}
