import type { BackendCandidate } from '@kvq/kernels';

/** `--backend` names the CLI documents (a module specifier or path of another backend package works too). */
export const BACKEND_NAMES = ['auto', 'cpu', 'cuda', 'rocm', 'reference'] as const;

/**
 * A candidate for a GPU package the CLI lists as an optional dependency: imported only when tried, and a package
 * that is not installed (`--no-optional`, an unsupported platform) is rejected as "not installed" with the fix.
 */
function optionalGpu(name: string, packageName: string, load: () => Promise<unknown>): BackendCandidate {
  return {
    name,
    load: async () => {
      let mod: { createBackend: (options?: Record<string, unknown>) => unknown };
      try {
        mod = (await load()) as typeof mod;
      } catch (error) {
        const code = (error as { code?: unknown } | null)?.code;
        if ((code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && String((error as Error).message).includes(packageName)) {
          throw new Error(`not installed (${packageName}, an optional dependency of @kvq/cli: install it to use ${name})`, { cause: error });
        }
        throw error;
      }
      // The engine never changes weights in place, so they stay on the device after their first use (without this,
      // every op uploads its weight matrix: 10 MB per decode step of kvq-tiny instead of 0.2 MB). KV caches are not
      // made resident: prefix-cache and tier loads write the host pools (KVQ_GPU_RESIDENT=all opts in).
      return { createBackend: (options?: Record<string, unknown>) => mod.createBackend({ residentWeights: true, ...options }) };
    },
  };
}

/**
 * The kernel backends `--backend auto` tries, best first: `cuda` (`@kvq/kernels-cuda`), `rocm` (`@kvq/kernels-rocm`),
 * then `cpu` (`@kvq/kernels-cpu`, as the engine's default); the engine appends the pure-TypeScript `reference` backend. A GPU
 * package whose addon is not built, or that finds no driver or device, is skipped silently in `auto` (`kvq env`
 * lists why); `--backend cuda` / `rocm` loads through the same candidate and fails with that reason instead.
 */
export const CLI_BACKEND_CANDIDATES: readonly BackendCandidate[] = Object.freeze([
  optionalGpu('cuda', '@kvq/kernels-cuda', () => import('@kvq/kernels-cuda')),
  optionalGpu('rocm', '@kvq/kernels-rocm', () => import('@kvq/kernels-rocm')),
  { name: 'cpu', load: () => import('@kvq/kernels-cpu') },
]);
