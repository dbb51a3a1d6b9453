import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { ChatTemplate, selectChatTemplate } from '../chat/chat-template.js';
import { parseGenerationConfig, type GenerationConfig } from '../config/generation-config.js';
import { parseHfConfig, type ModelConfig } from '../config/model-config.js';
import { EngineError, describeValue } from '../errors.js';
import {
  readSafetensorsHeader,
  requireWeightDType,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
} from '../formats/safetensors.js';
import { openFileSource, pathKind, readTensorData, type ByteSource } from '../io/source.js';
import { shapeSize, tensorToFloat32, type Tensor } from '../tensor.js';
import { Tokenizer, type TokenizerConfigJson } from '../tokenizer/tokenizer.js';
import {
  classifyKvScaleName,
  kvScaleMethodOf,
  resolveKvScales,
  type CheckpointKvScales,
  type RawLayerKvScales,
} from '../weights/kv-scales.js';
import { assembleWeights, checkShape, expectedHfTensors, lastLayerProbeName, type ExpectedTensor } from '../weights/model-weights.js';
import { compressedTensorNames, parseCompressedTensorsConfig, readCompressedWeight, schemeForModule, type CompressedTensorsScheme } from './compressed-tensors.js';
import { KV_CACHE_PLAN_FILE, parseKvCachePlan } from '../weights/kv-cache-plan.js';
import { ProgressTracker, readJsonFile, type LoadedModel, type LoadedTokenizer, type LoadModelOptions } from './types.js';

/** One opened safetensors file. */
export interface SafetensorsShard {
  readonly source: ByteSource;
  readonly header: SafetensorsHeader;
}

/**
 * Open the safetensors files of an HF folder: `model.safetensors`, or every shard named by
 * `model.safetensors.index.json`'s `weight_map`.
 * @throws EngineError `FILE_NOT_FOUND` / `MALFORMED` / `TRUNCATED`.
 */
async function openSafetensorsShards(dir: string): Promise<SafetensorsShard[]> {
  const indexPath = join(dir, 'model.safetensors.index.json');
  const index = await readJsonFile(indexPath, false);
  let files: string[];
  if (index !== undefined) {
    const map = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) {
      throw new EngineError('MALFORMED', `${indexPath}: weight_map must be an object of tensor name → file`, { file: indexPath, field: 'weight_map' });
    }
    const set = new Set<string>();
    for (const [name, f] of Object.entries(map as Record<string, unknown>)) {
      if (typeof f !== 'string' || f !== basename(f) || f === '..' || f === '.') {
        throw new EngineError('MALFORMED', `${indexPath}: weight_map[${JSON.stringify(name)}] = ${describeValue(f)} is not a file name in the folder`, {
          file: indexPath,
          field: `weight_map.${name}`,
        });
      }
      set.add(f);
    }
    files = [...set].sort();
  } else if ((await pathKind(join(dir, 'model.safetensors'))) === 'file') {
    files = ['model.safetensors'];
  } else {
    const legacy = (await pathKind(join(dir, 'pytorch_model.bin'))) === 'file' ? ' (pytorch_model.bin is not supported: convert it to safetensors)' : '';
    throw new EngineError('FILE_NOT_FOUND', `${dir}: no model.safetensors or model.safetensors.index.json${legacy}`, { file: dir });
  }
  const shards: SafetensorsShard[] = [];
  try {
    for (const f of files) {
      const source = await openFileSource(join(dir, f));
      try {
        shards.push({ source, header: await readSafetensorsHeader(source) });
      } catch (e) {
        await source.close();
        throw e;
      }
    }
  } catch (e) {
    await Promise.all(shards.map((s) => s.source.close()));
    throw e;
  }
  return shards;
}

/** Read one tensor of a shard in its stored dtype (F32/F16/BF16). */
async function readWeight(shard: SafetensorsShard, info: SafetensorsTensorInfo): Promise<Tensor> {
  const dtype = requireWeightDType(shard.header, info);
  const data = await readTensorData(shard.source, info.begin, shapeSize(info.shape), dtype);
  return { dtype, shape: [...info.shape], data };
}

/**
 * Weights, KV scales and warnings from opened safetensors shards for a parsed config (the part of the HF loader
 * that touches tensor bytes; also used on in-memory sources by the fuzz tests).
 * @throws EngineError `MISSING_TENSOR` / `SHAPE_MISMATCH` / `UNSUPPORTED_DTYPE` / `MALFORMED` / IO errors.
 */
export async function readHfWeights(
  config: ModelConfig,
  shards: readonly SafetensorsShard[],
  quantizationConfig: unknown,
  configFile: string,
  options: LoadModelOptions = {},
): Promise<Pick<LoadedModel, 'weights' | 'kvScales' | 'checkpointKvScales' | 'warnings'>> {
  const where = new Map<string, { shard: SafetensorsShard; info: SafetensorsTensorInfo }>();
  for (const shard of shards) {
    for (const [name, info] of shard.header.tensors) {
      const prev = where.get(name);
      if (prev) {
        throw new EngineError('MALFORMED', `tensor ${name} is stored in both ${prev.shard.source.name} and ${shard.source.name}`, {
          file: shard.source.name,
          field: name,
        });
      }
      where.set(name, { shard, info });
    }
  }
  const warnings: string[] = [];
  // Cheap check before listing 9+ tensors per layer: a corrupt num_hidden_layers must not allocate millions of entries.
  const lastLayer = lastLayerProbeName(config);
  // pack-quantized (compressed-tensors int4) checkpoints store `weight_packed` instead of `weight`.
  if (!where.has(lastLayer) && !where.has(lastLayer.replace(/\.weight$/, '.weight_packed'))) {
    throw new EngineError('MISSING_TENSOR', `tensor ${lastLayer} is missing from ${shards.map((s) => s.source.name).join(', ')} (num_hidden_layers ${config.numLayers})`, {
      file: shards[0]?.source.name,
      field: lastLayer,
    });
  }
  const expected = expectedHfTensors(config);
  const used = new Set<string>();
  const compressed = parseCompressedTensorsConfig(quantizationConfig, configFile);
  const lookup = (name: string): { source: ByteSource; info: SafetensorsTensorInfo } | undefined => {
    const f = where.get(name);
    return f ? { source: f.shard.source, info: f.info } : undefined;
  };
  const quantized = new Map<string, { module: string; scheme: CompressedTensorsScheme }>();
  let totalBytes = 0;
  for (const e of expected) {
    const scheme = compressed ? schemeOf(compressed, e) : undefined;
    if (scheme && scheme.format !== 'dense') {
      const module = e.name.slice(0, -'.weight'.length);
      quantized.set(e.name, { module, scheme });
      const names = compressedTensorNames(module, scheme);
      for (const n of [...names.required, ...names.optional]) {
        const f = where.get(n);
        if (!f) continue;
        used.add(n);
        totalBytes += f.info.end - f.info.begin;
      }
      continue;
    }
    const found = where.get(e.name);
    if (!found) {
      throw new EngineError('MISSING_TENSOR', `tensor ${e.name} is missing from ${shards.map((s) => s.source.name).join(', ')}`, {
        file: shards[0]?.source.name,
        field: e.name,
      });
    }
    requireWeightDType(found.shard.header, found.info);
    checkShape(e, found.info.shape, found.shard.source.name);
    totalBytes += found.info.end - found.info.begin;
    used.add(e.name);
  }
  const progress = new ProgressTracker(totalBytes, options.onProgress);
  const tensors = new Map<string, Tensor>();
  for (const e of expected) {
    const q = quantized.get(e.name);
    if (q) {
      const [rows, cols] = e.shape as [number, number];
      const t = await readCompressedWeight(q.module, rows, cols, q.scheme, lookup);
      tensors.set(e.name, t);
      progress.add(t.data.byteLength, lookup(`${q.module}.weight_scale`)!.source.name, e.name);
      continue;
    }
    const { shard, info } = where.get(e.name)!;
    tensors.set(e.name, await readWeight(shard, info));
    progress.add(info.end - info.begin, shard.source.name, e.name);
  }
  const weights = assembleWeights(config, tensors, configFile);

  // KV-cache scales.
  const rawLayers: RawLayerKvScales[] = Array.from({ length: config.numLayers }, () => ({ names: {} }));
  let scaleTensors = 0;
  for (const [name, { shard, info }] of where) {
    const c = classifyKvScaleName(name);
    if (!c) continue;
    used.add(name);
    if (c.slot === 'ignore') continue;
    if (c.layer >= config.numLayers) {
      warnings.push(`${name}: layer ${c.layer} does not exist (num_hidden_layers ${config.numLayers}); ignored`);
      continue;
    }
    const layer = rawLayers[c.layer]!;
    if (layer[c.slot]) {
      throw new EngineError('INVALID_KV_SCALE', `${name}: layer ${c.layer} already has a ${c.slot} scale from ${layer.names[c.slot]}`, {
        file: shard.source.name,
        field: name,
      });
    }
    layer[c.slot] = tensorToFloat32(await readWeight(shard, info)).slice();
    layer.names[c.slot] = name;
    scaleTensors++;
  }
  const methodInfo = kvScaleMethodOf(quantizationConfig, scaleTensors > 0, configFile);
  let checkpointKvScales: CheckpointKvScales | undefined;
  let kvScales: LoadedModel['kvScales'];
  if (methodInfo) {
    // The deprecated single `kv_scale` feeds k (vLLM remaps it to k_scale); the base rules then copy it to v.
    checkpointKvScales = { ...methodInfo, layers: rawLayers };
    if (methodInfo.method === 'base' && quantizationConfig === undefined) {
      warnings.push(`KV-cache scale tensors found without a quantization_config; applying vLLM's fp8 (BaseKVCacheMethod) rules`);
    }
    kvScales = resolveKvScales(checkpointKvScales, {
      numHeads: config.numHeads,
      numKvHeads: config.numKvHeads,
      format: options.kvCacheFormat ?? 'e4m3fn',
      doubleCompressedTensorsOnFnuz: options.doubleCompressedTensorsOnFnuz ?? false,
    });
    warnings.push(...kvScales.warnings);
  }
  const unused = [...where.keys()].filter((n) => !used.has(n) && !n.endsWith('rotary_emb.inv_freq') && !(config.tieWordEmbeddings && n === 'lm_head.weight'));
  if (unused.length > 0) {
    warnings.push(`${unused.length} checkpoint tensors are not used: ${unused.slice(0, 5).join(', ')}${unused.length > 5 ? ', ...' : ''}`);
  }
  return { weights, kvScales, checkpointKvScales, warnings };
}

/**
 * The compressed-tensors scheme of an expected tensor: only Linear weights (`*_proj.weight`, `lm_head.weight`) can be
 * quantized; embeddings, norms and biases stay dense.
 */
function schemeOf(config: NonNullable<ReturnType<typeof parseCompressedTensorsConfig>>, e: ExpectedTensor): CompressedTensorsScheme | undefined {
  if (e.shape.length !== 2 || e.slot === 'embedTokens' || !e.name.endsWith('.weight')) return undefined;
  return schemeForModule(config, e.name.slice(0, -'.weight'.length));
}

/** Parse config.json and generation_config.json of an HF folder. */
export async function readHfConfigs(dir: string): Promise<{ config: ModelConfig; generationConfig: GenerationConfig; raw: Record<string, unknown> }> {
  const configPath = join(dir, 'config.json');
  const raw = await readJsonFile(configPath, true);
  const genPath = join(dir, 'generation_config.json');
  const genJson = await readJsonFile(genPath, false);
  const generationConfig = genJson === undefined ? {} : parseGenerationConfig(genJson, genPath);
  const config = parseHfConfig(raw, configPath, generationConfig.eosTokenIds);
  return { config, generationConfig, raw: raw as Record<string, unknown> };
}

/**
 * The tokenizer and chat template of an HF folder (`tokenizer.json`, `tokenizer_config.json`, and the chat
 * template from `tokenizer_config.json`, `chat_template.jinja` or `chat_template.json`).
 * @throws EngineError `FILE_NOT_FOUND` (no tokenizer.json) / tokenizer and template errors.
 */
export async function loadHfTokenizer(dir: string, config?: Pick<ModelConfig, 'bosTokenId' | 'eosTokenIds' | 'vocabSize'>): Promise<LoadedTokenizer> {
  const tokPath = join(dir, 'tokenizer.json');
  if ((await pathKind(tokPath)) !== 'file') {
    const spm = (await pathKind(join(dir, 'tokenizer.model'))) === 'file' ? ' (SentencePiece tokenizer.model files are not read: provide tokenizer.json)' : '';
    throw new EngineError('FILE_NOT_FOUND', `${tokPath}: required file is missing${spm}`, { file: tokPath });
  }
  const json = await readJsonFile(tokPath, true);
  const cfgPath = join(dir, 'tokenizer_config.json');
  const cfg = await readJsonFile(cfgPath, false);
  if (cfg !== undefined && (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg))) {
    throw new EngineError('MALFORMED', `${cfgPath}: must be a JSON object`, { file: cfgPath });
  }
  const tokConfig = (cfg ?? {}) as TokenizerConfigJson;
  const tokenizer = Tokenizer.fromJson(json, {
    config: tokConfig,
    bosTokenId: config?.bosTokenId,
    eosTokenIds: config?.eosTokenIds,
    file: tokPath,
  });
  if (config && tokenizer.vocabSize > config.vocabSize) {
    throw new EngineError('INVALID_CONFIG', `${tokPath}: the tokenizer has ${tokenizer.vocabSize} ids but config.json vocab_size is ${config.vocabSize}`, {
      file: tokPath,
      field: 'vocab_size',
    });
  }
  let source = selectChatTemplate(tokConfig.chat_template, cfgPath);
  let templateFile = cfgPath;
  if (source === undefined) {
    const jinjaPath = join(dir, 'chat_template.jinja');
    if ((await pathKind(jinjaPath)) === 'file') {
      source = await readFile(jinjaPath, 'utf8');
      templateFile = jinjaPath;
    } else {
      const jsonPath = join(dir, 'chat_template.json');
      const t = await readJsonFile(jsonPath, false);
      if (t !== undefined) {
        source = selectChatTemplate((t as { chat_template?: unknown } | null)?.chat_template, jsonPath);
        templateFile = jsonPath;
      }
    }
  }
  const chatTemplate = source === undefined ? undefined : new ChatTemplate(source, tokenizer.specialTokens, templateFile);
  return { tokenizer, chatTemplate };
}

/** Load a Hugging Face model folder. See `loadModel`. */
export async function loadHfModel(dir: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
  const { config, generationConfig, raw } = await readHfConfigs(dir);
  const { tokenizer, chatTemplate } = await loadHfTokenizer(dir, config);
  const shards = await openSafetensorsShards(dir);
  try {
    const loaded = await readHfWeights(config, shards, raw.quantization_config, join(dir, 'config.json'), options);
    const planPath = join(dir, KV_CACHE_PLAN_FILE);
    const planJson = await readJsonFile(planPath, false);
    const kvCachePlan = planJson === undefined ? undefined : parseKvCachePlan(planJson, config.numLayers, planPath);
    return { format: 'hf', path: dir, config, tokenizer, chatTemplate, generationConfig, ...loaded, ...(kvCachePlan ? { kvCachePlan } : {}) };
  } finally {
    await Promise.all(shards.map((s) => s.source.close()));
  }
}
