// @ts-check
import { defineConfig } from 'tsup';

/**
 * Build a package's public entries as ESM with declarations.
 * Only options tsdown also has are used, so a later switch is mechanical.
 * @param {{ entry?: Record<string, string> | string[], external?: string[] }} [options]
 */
export function kvqTsup(options = {}) {
  return defineConfig({
    entry: options.entry ?? { index: 'src/index.ts' },
    format: ['esm'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    platform: 'node',
    treeshake: true,
    external: options.external ?? [],
  });
}
