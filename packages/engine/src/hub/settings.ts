import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { getRepoFolderName } from '@huggingface/hub';
import { EngineError, describeValue } from '../errors.js';

/** The kind of a Hub repository kvq reads. */
export type HubRepoType = 'model' | 'dataset';

/** A parsed Hub id: `org/name[@revision]`. */
export interface HubId {
  /** `org/name`. */
  readonly repo: string;
  /** Branch, tag or 40-hex commit. Default `main`. */
  readonly revision: string;
}

/** Where and how the Hub is reached: huggingface_hub's environment variables, read by {@link hubSettings}. */
export interface HubSettings {
  /** `HF_ENDPOINT`, default `https://huggingface.co` (no trailing slash). */
  readonly endpoint: string;
  /** `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`, or the token file `HF_TOKEN_PATH`, default `$HF_HOME/token`). */
  readonly token: string | undefined;
  /** `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. */
  readonly cacheDir: string;
  /** `HF_HUB_OFFLINE` set to 1/true/yes/on: only the cache is used, nothing is requested. */
  readonly offline: boolean;
}

const ID = /^([A-Za-z0-9][\w.-]*)\/([\w.-]+)(?:@([\w./-]+))?$/;

/**
 * True when `spec` looks like a Hub id (`org/name` or `org/name@revision`) and is not an existing path: a local
 * file or folder of the same name always wins.
 */
export function isHubId(spec: string): boolean {
  return ID.test(spec) && !spec.startsWith('.') && !existsSync(spec);
}

/**
 * Parses `org/name[@revision]` (revision default `main`; `refs/pr/3` and commits allowed).
 * @throws EngineError `INVALID_ARGUMENT` naming the value when it is not a Hub id
 */
export function parseHubId(spec: string): HubId {
  const m = ID.exec(spec);
  if (!m) throw new EngineError('INVALID_ARGUMENT', `${describeValue(spec)} is not a Hub id (expected org/name or org/name@revision)`, { field: 'model' });
  return { repo: `${m[1]}/${m[2]}`, revision: m[3] ?? 'main' };
}

const truthy = (v: string | undefined) => ['1', 'true', 'yes', 'on'].includes((v ?? '').trim().toLowerCase());

/**
 * Reads the Hub settings from `env` (default `process.env`) the way huggingface_hub does: `HF_ENDPOINT`,
 * `HF_TOKEN` / `HUGGING_FACE_HUB_TOKEN` / token file, `HF_HOME`, `HF_HUB_CACHE`, `XDG_CACHE_HOME`, `HF_HUB_OFFLINE`.
 * An empty `HF_TOKEN` counts as unset (the token file is read), as in huggingface_hub.
 */
export function hubSettings(env: NodeJS.ProcessEnv = process.env): HubSettings {
  const hfHome = env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface');
  let token = env.HF_TOKEN?.trim() || env.HUGGING_FACE_HUB_TOKEN?.trim() || undefined;
  if (token === undefined) {
    try {
      token = readFileSync(env.HF_TOKEN_PATH || join(hfHome, 'token'), 'utf8').trim();
    } catch {
      token = undefined;
    }
  }
  return {
    endpoint: (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, ''),
    token: token?.trim() || undefined,
    cacheDir: env.HF_HUB_CACHE || join(hfHome, 'hub'),
    offline: truthy(env.HF_HUB_OFFLINE),
  };
}

/** The cache folder of a repo: `<cacheDir>/models--org--name` or `datasets--org--name` (huggingface_hub's layout). */
export function repoCacheFolder(settings: HubSettings, repo: string, type: HubRepoType = 'model'): string {
  return join(settings.cacheDir, getRepoFolderName({ type, name: repo }));
}
