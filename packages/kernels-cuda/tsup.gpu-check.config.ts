import { defineConfig } from 'tsup';

/**
 * One self-contained ESM file for tooling/gpu-check.sh: the GPU check and everything it imports (`@kvq/kernels`
 * and its testing kit, `@kvq/fp8`, `@kvq/cache`, this facade) bundled from their TypeScript sources, so a bare
 * machine needs only `node` and the built addon (KVQ_CUDA_ADDON) to run it.
 */
export default defineConfig({
  entry: { 'gpu-check': 'src/gpu-check-cli.ts' },
  outDir: 'build/gpu-carry',
  format: ['esm'],
  outExtension: () => ({ js: '.mjs' }),
  target: 'node18',
  platform: 'node',
  bundle: true,
  noExternal: [/.*/],
  dts: false,
  sourcemap: false,
  clean: false,
  splitting: false,
  esbuildOptions(options) {
    options.conditions = ['@kvq/source', 'import', 'node', 'default'];
  },
});
