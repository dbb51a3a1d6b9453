import { join } from 'node:path';
import { EngineError } from '../errors.js';
import { cachedSnapshot, fetchFile, resolveRevision, writeRef, type HubFetchOptions } from './download.js';
import { hubSettings, parseHubId, type HubId, type HubRepoType, type HubSettings } from './settings.js';

/** Options of {@link downloadModel}. */
export interface DownloadModelOptions extends HubFetchOptions {
  /** Only `config.json` and `generation_config.json` (e.g. for capacity planning). Default false. */
  readonly configOnly?: boolean;
}

/** Files kvq needs from a model repo, besides the weights. */
const METADATA = new Set([
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'chat_template.jinja',
  'chat_template.json',
  'model.safetensors.index.json',
]);

/**
 * Picks the files of a model repo listing that `loadModel` reads: the metadata and top-level `*.safetensors`, or
 * the repo's only `.gguf`.
 * @throws EngineError `UNSUPPORTED_FORMAT` naming the repo: several GGUF files, or nothing kvq can load
 */
export function selectModelFiles(files: readonly string[], repo: string): string[] {
  const safetensors = files.filter((f) => f.endsWith('.safetensors') && !f.includes('/'));
  const gguf = files.filter((f) => f.endsWith('.gguf'));
  const meta = files.filter((f) => METADATA.has(f));
  if (safetensors.length > 0) return [...meta, ...safetensors];
  if (gguf.length === 1) return [gguf[0]!];
  if (gguf.length > 1) {
    throw new EngineError('UNSUPPORTED_FORMAT', `${repo} has ${gguf.length} GGUF files (${gguf.slice(0, 6).join(', ')}${gguf.length > 6 ? ', ...' : ''}); download the one you want and pass its path`, { file: repo });
  }
  throw new EngineError('UNSUPPORTED_FORMAT', `${repo} has neither *.safetensors nor a .gguf file kvq can load`, { file: repo });
}

/** A cached model snapshot is usable when it has config + safetensors, or a GGUF file; returns the path to load. */
function usableModel(dir: string, files: readonly string[], configOnly: boolean): string | undefined {
  if (configOnly) return files.includes('config.json') ? dir : undefined;
  const gguf = files.filter((f) => f.endsWith('.gguf'));
  if (files.includes('config.json') && files.some((f) => f.endsWith('.safetensors'))) return dir;
  return gguf.length === 1 ? join(dir, gguf[0]!) : undefined;
}

/** Resolves the revision online, or falls back to (or, offline, only uses) the cache. */
async function online<T>(
  id: HubId,
  type: HubRepoType,
  settings: HubSettings,
  options: HubFetchOptions,
  fromCache: (snap: { dir: string; commit: string; files: string[] }) => T | undefined,
): Promise<{ cached: T } | { commit: string; files: readonly string[] }> {
  const label = `${type === 'dataset' ? 'dataset ' : ''}${id.repo}@${id.revision}`;
  if (settings.offline) {
    const snap = await cachedSnapshot(settings, id, type);
    const hit = snap && fromCache(snap);
    if (hit === undefined) {
      throw new EngineError('HUB_NOT_CACHED', `${label} is not in the Hugging Face cache (${settings.cacheDir}) and HF_HUB_OFFLINE is set`, { file: label });
    }
    return { cached: hit };
  }
  try {
    return await resolveRevision(id, type, settings);
  } catch (error) {
    if (error instanceof EngineError && error.code === 'HUB_UNREACHABLE') {
      const snap = await cachedSnapshot(settings, id, type);
      const hit = snap && fromCache(snap);
      if (hit !== undefined) {
        options.onNotice?.(`${error.message}; using the cached snapshot`);
        return { cached: hit };
      }
    }
    throw error;
  }
}

/**
 * Resolves a Hub model id `org/name[@revision]` to a local folder (or `.gguf` file) in the standard Hugging Face
 * cache layout (`models--org--name/{blobs,snapshots/<commit>,refs/<revision>}`), downloading what is missing with
 * resume and SHA-256 checks. `HF_HUB_OFFLINE=1` uses the cache only; when the Hub cannot be reached, a cached
 * snapshot is used with a notice.
 * @example
 * const dir = await downloadModel('meta-llama/Llama-3.2-1B@main', { onProgress: (p) => console.log(p.file, p.bytes) });
 * @throws EngineError `INVALID_ARGUMENT` (not an id), `HUB_NOT_FOUND`, `HUB_ACCESS_DENIED`, `HUB_NOT_CACHED`,
 * `HUB_UNREACHABLE`, `HUB_DOWNLOAD_FAILED`, `UNSUPPORTED_FORMAT` (nothing loadable), each naming the repo/file
 */
export async function downloadModel(spec: string, options: DownloadModelOptions = {}): Promise<string> {
  const settings = options.settings ?? hubSettings();
  const id = parseHubId(spec);
  const configOnly = options.configOnly === true;
  const r = await online(id, 'model', settings, options, (s) => usableModel(s.dir, s.files, configOnly));
  if ('cached' in r) return r.cached;
  const wanted = configOnly ? r.files.filter((f) => f === 'config.json' || f === 'generation_config.json') : selectModelFiles(r.files, id.repo);
  if (configOnly && !wanted.includes('config.json')) throw new EngineError('HUB_NOT_FOUND', `${id.repo}@${id.revision} has no config.json`, { file: `${id.repo}/config.json` });
  for (const file of wanted) await fetchFile(settings, id.repo, 'model', r.commit, file, options);
  await writeRef(settings, id, 'model', r.commit);
  const dir = (await cachedSnapshot(settings, { repo: id.repo, revision: r.commit }, 'model'))!.dir;
  return wanted.length === 1 && wanted[0]!.endsWith('.gguf') ? join(dir, wanted[0]!) : dir;
}

/** Data file kinds {@link downloadDataset} fetches. */
export const DATASET_FILE_EXTENSIONS: readonly string[] = Object.freeze(['.parquet', '.jsonl', '.ndjson', '.json', '.txt']);

const dataFile = (f: string) => DATASET_FILE_EXTENSIONS.some((e) => f.toLowerCase().endsWith(e)) && !f.split('/').some((p) => p.startsWith('.'));

/** True when a repo path is marked as belonging to `split`: a folder named so, or a file name `split[-._ 0-9]...`. */
function inSplit(file: string, split: string): boolean {
  const parts = file.toLowerCase().split('/');
  const base = parts.pop()!.replace(/\.[^.]+$/, '');
  const s = split.toLowerCase();
  return parts.includes(s) || new RegExp(`(^|[-._ 0-9])${s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}($|[-._ 0-9])`).test(base);
}

const KNOWN_SPLITS = ['train', 'test', 'validation', 'valid', 'dev', 'eval'];

/**
 * The data files of one split in a dataset repo listing, sorted: files whose folder or name names the split
 * (`data/train-00000-of-00002.parquet`, `train.jsonl`, `default/train/0000.parquet`), as the `datasets` library's
 * default patterns do; when no file names any split, every data file is `train`. README/config files are ignored.
 * @throws EngineError `HUB_NOT_FOUND` naming the repo, the split and the splits it has
 */
export function selectDatasetFiles(files: readonly string[], split: string, repo: string): string[] {
  const data = files.filter(dataFile);
  const marked = data.filter((f) => inSplit(f, split));
  if (marked.length > 0) return marked.sort();
  const anySplit = data.some((f) => KNOWN_SPLITS.some((s) => inSplit(f, s)));
  if (!anySplit && split.toLowerCase() === 'train' && data.length > 0) return [...data].sort();
  const have = KNOWN_SPLITS.filter((s) => data.some((f) => inSplit(f, s)));
  throw new EngineError(
    'HUB_NOT_FOUND',
    data.length === 0
      ? `dataset ${repo} has no ${DATASET_FILE_EXTENSIONS.join('/')} data file`
      : `dataset ${repo} has no data file for split ${JSON.stringify(split)}${have.length ? ` (splits found: ${have.join(', ')})` : ''}`,
    { file: repo, field: 'split' },
  );
}

/** Options of {@link downloadDataset}. */
export interface DownloadDatasetOptions extends HubFetchOptions {
  /** The split whose files are fetched. Default `train`. */
  readonly split?: string;
}

/** A dataset split in the local Hub cache. */
export interface HubDataset {
  /** `org/name`. */
  readonly repo: string;
  /** The commit the files come from. */
  readonly commit: string;
  readonly split: string;
  /** Absolute paths of the split's data files in `datasets--org--name/snapshots/<commit>/`, sorted by repo path. */
  readonly files: readonly string[];
}

/**
 * Brings one split of a Hub dataset `org/name[@revision]` into the Hugging Face cache
 * (`datasets--org--name/{blobs,snapshots,refs}`), with the same resume, SHA-256 and offline rules as
 * {@link downloadModel}, and returns its data files (Parquet, JSON Lines, text; see {@link selectDatasetFiles}).
 * @throws EngineError `HUB_NOT_FOUND` (repo, revision or split), `HUB_ACCESS_DENIED`, `HUB_NOT_CACHED`,
 * `HUB_UNREACHABLE`, `HUB_DOWNLOAD_FAILED`
 */
export async function downloadDataset(spec: string, options: DownloadDatasetOptions = {}): Promise<HubDataset> {
  const settings = options.settings ?? hubSettings();
  const id = parseHubId(spec);
  const split = options.split ?? 'train';
  const r = await online(id, 'dataset', settings, options, (s) => {
    try {
      return { commit: s.commit, files: selectDatasetFiles(s.files, split, id.repo).map((f) => join(s.dir, ...f.split('/'))) };
    } catch {
      return undefined;
    }
  });
  if ('cached' in r) return { repo: id.repo, split, ...r.cached };
  const wanted = selectDatasetFiles(r.files, split, id.repo);
  const paths: string[] = [];
  for (const file of wanted) paths.push(await fetchFile(settings, id.repo, 'dataset', r.commit, file, options));
  await writeRef(settings, id, 'dataset', r.commit);
  return { repo: id.repo, commit: r.commit, split, files: paths };
}
