import { gpuBackendCandidate } from '@kvq/engine';
import type { BackendCandidate } from '@kvq/kernels';

/** `--backend` names the CLI documents (a module specifier or path of another backend package works too). */
export const BACKEND_NAMES = ['auto', 'cpu', 'cuda', 'rocm', 'reference'] as const;

/**
 * The kernel backends `--backend auto` tries, best first: `cuda` (`@kvq/kernels-cuda`), `rocm` (`@kvq/kernels-rocm`),
 * then `cpu` (`@kvq/kernels-cpu`, as the engine's default); the engine appends the pure-TypeScript `reference` backend. A GPU
 * package whose addon is not built, or that finds no driver or device, is skipped silently in `auto` (`kvq env`
 * lists why); `--backend cuda` / `rocm` loads through the same candidate and fails with that reason instead.
 */
export const CLI_BACKEND_CANDIDATES: readonly BackendCandidate[] = Object.freeze([
  gpuBackendCandidate('cuda', '@kvq/kernels-cuda', () => import('@kvq/kernels-cuda'), '@kvq/cli'),
  gpuBackendCandidate('rocm', '@kvq/kernels-rocm', () => import('@kvq/kernels-rocm'), '@kvq/cli'),
  { name: 'cpu', load: () => import('@kvq/kernels-cpu') },
]);
