// @ts-check
import { defineConfig } from 'tsup';

/**
 * Build a package's public entries as ESM with declarations.
 * Only options tsdown also has are used, so a later switch is mechanical.
 * `KVQ_BUILD_DTS=0` skips the declarations (about 80% of a package's build time): `pnpm kvq` sets it, because running
 * the CLI needs only JavaScript; turbo keys the `build` cache on it, so a later `pnpm build` writes them.
 * @param {{ entry?: Record<string, string> | string[], external?: string[] }} [options]
 */
export function kvqTsup(options = {}) {
  return defineConfig({
    entry: options.entry ?? { index: 'src/index.ts' },
    format: ['esm'],
    dts: process.env.KVQ_BUILD_DTS !== '0',
    sourcemap: true,
    clean: true,
    target: 'node20',
    platform: 'node',
    treeshake: true,
    external: options.external ?? [],
  });
}
