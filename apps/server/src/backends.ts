import { ENGINE_BACKEND_CANDIDATES, gpuBackendCandidate } from '@kvq/engine';
import type { BackendCandidate } from '@kvq/kernels';

/**
 * The kernel backends a server that loads its own model tries (`ServerOptions.backendCandidates`' default), best
 * first: `cuda` (`@kvq/kernels-cuda`), `rocm` (`@kvq/kernels-rocm`), then the engine's `cpu`; the engine appends the
 * pure-TypeScript `reference` backend. With `backend: 'auto'` a GPU package whose addon is not built, or that finds no
 * driver or device, is skipped silently; `backend: 'cuda'` / `'rocm'` loads through the same candidate and fails with
 * `BACKEND_UNAVAILABLE` and that reason instead.
 */
export const SERVER_BACKEND_CANDIDATES: readonly BackendCandidate[] = Object.freeze([
  gpuBackendCandidate('cuda', '@kvq/kernels-cuda', () => import('@kvq/kernels-cuda'), '@kvq/server'),
  gpuBackendCandidate('rocm', '@kvq/kernels-rocm', () => import('@kvq/kernels-rocm'), '@kvq/server'),
  ...ENGINE_BACKEND_CANDIDATES,
]);
