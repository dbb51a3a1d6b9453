import { readFileSync } from 'node:fs';

import type { Fp8Format } from '@kvq/fp8';

import type { ObserverKind } from './observers.js';
import type { ScaleStrategy } from './scales.js';

let cachedVersion: string | undefined;

/** This package's version (from its package.json; the same file from `src/` and from `dist/`). */
export function kvqVersion(): string {
  if (cachedVersion === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
      cachedVersion = typeof pkg.version === 'string' ? pkg.version : 'unknown';
    } catch {
      cachedVersion = 'unknown';
    }
  }
  return cachedVersion;
}

/**
 * Where a set of scales came from, written beside a calibrated checkpoint (`kvq_calibration.json` and the scale
 * file's safetensors metadata). Deterministic: no timestamps, so equal inputs give byte-equal outputs.
 */
export interface Provenance {
  readonly tool: 'kvq';
  /** @kvq/calibrate's version. */
  readonly kvqVersion: string;
  readonly method: 'none' | 'random' | 'dataset';
  readonly strategy: ScaleStrategy;
  /** Dataset observer; `undefined` for `none` / `random`. */
  readonly observer: ObserverKind | undefined;
  /** FP8 format the scales were computed for. */
  readonly format: Fp8Format;
  readonly quantizeQuery: boolean;
  /** Whether later layers saw the quantized cache during calibration. */
  readonly fakeQuantize: boolean;
  readonly seed: number;
  /** Samples asked for, and used (the dataset may hold fewer; empty ones are dropped). */
  readonly numSamplesRequested: number;
  readonly numSamples: number;
  /** Tokens processed. */
  readonly numTokens: number;
  readonly maxSeqLen: number;
  /** SHA-256 (hex) of the dataset bytes; `undefined` when no dataset was used. */
  readonly datasetSha256: string | undefined;
  /** Base name of the dataset file (`<inline>` for arrays). */
  readonly dataset: string | undefined;
  /** Records in the dataset. */
  readonly datasetRecords: number | undefined;
  /** Divisors of the `random` method (vLLM's Q/K/V_SCALE_CONSTANT), else the format's scale max. */
  readonly divisors: { readonly q: number; readonly k: number; readonly v: number };
}
