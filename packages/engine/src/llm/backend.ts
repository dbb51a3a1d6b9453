/**
 * Choosing the kernel backend an {@link LLM} runs on, never silently: an explicit backend that cannot load is an
 * error, and ending up on the pure-TypeScript reference backend (or on another backend than the preferred one)
 * produces one warning naming the reason and the fix.
 * @module
 */
import { createReferenceBackend, loadBackend, type BackendCandidate, type KernelBackend, type LoadedBackend, type RejectedBackend } from '@kvq/kernels';

/** `code` of the backend fallback warning (for `process.on('warning')` filters and `node --disable-warning`). */
export const BACKEND_FALLBACK_WARNING = 'KVQ_BACKEND_FALLBACK';

/** The warning given when the engine falls back to a slower backend than the best one it looked for. */
export interface BackendWarning {
  /** Always {@link BACKEND_FALLBACK_WARNING}. */
  readonly code: typeof BACKEND_FALLBACK_WARNING;
  /** One line: which backend runs, why each better candidate was rejected, and how to fix it. */
  readonly message: string;
  /** The backend that runs, e.g. `'reference'`. */
  readonly backend: string;
  /** The rejected candidates, in the order tried, with reasons. */
  readonly rejected: readonly RejectedBackend[];
}

/** Receives backend warnings instead of `process.emitWarning` (e.g. to log them, or `() => {}` to silence them). */
export type WarningHandler = (warning: BackendWarning) => void;

/** Options of {@link selectBackend}. */
export interface SelectBackendOptions {
  /**
   * A ready backend (used as is), a name or module specifier that MUST load (`'cpu'`, `'reference'`, `'cuda'`,
   * a path: failure throws `BACKEND_UNAVAILABLE`, never a fallback), or `'auto'` / `undefined` for the best
   * available (with `KVQ_BACKEND` honoured). Default `undefined`.
   */
  readonly backend?: KernelBackend | string | undefined;
  /** The `KVQ_BACKEND` value (default `process.env.KVQ_BACKEND`); used when `backend` is `'auto'` / `undefined`. */
  readonly env?: string | undefined;
  /**
   * Native candidates, best first. Default {@link ENGINE_BACKEND_CANDIDATES}: `@kvq/kernels-cpu` (imported by this
   * package, so it resolves under any package manager). The reference backend always comes last. In `'auto'` a
   * candidate that cannot load is recorded in {@link LoadedBackend.rejected} and skipped without a warning when a later
   * native candidate loads; a named `backend` (`'cuda'`) loads through the candidate of that `name` when there is one.
   */
  readonly candidates?: readonly BackendCandidate[] | undefined;
  /**
   * Where a fallback warning goes. Default: `process.emitWarning(message, { type: 'KvqWarning', code:
   * 'KVQ_BACKEND_FALLBACK' })`, at most once per process for the same message, which Node prints on stderr
   * (`(node:PID) [KVQ_BACKEND_FALLBACK] KvqWarning: kvq: using ...`) and which `--disable-warning=KVQ_BACKEND_FALLBACK`
   * or a `process.on('warning')` listener can filter. A handler is called for every fallback instead.
   */
  readonly onWarning?: WarningHandler | undefined;
}

/** The default native candidates of the engine: the CPU addon package, a dependency of this package. */
export const ENGINE_BACKEND_CANDIDATES: readonly BackendCandidate[] = Object.freeze([
  { name: 'cpu', load: () => import('@kvq/kernels-cpu') as Promise<unknown> },
]);

/**
 * A backend candidate for an optional GPU package of an app (`@kvq/kernels-cuda`, `@kvq/kernels-rocm`): `load` is the
 * app's own `() => import(packageName)`, so the package resolves from the app that lists it. A package that is not
 * installed (`--no-optional`, an unsupported platform) is rejected as "not installed" naming `dependent` and the fix.
 * The backend keeps weights resident on the device after their first use (the engine never changes weights in
 * place; without this every op uploads its weight matrix). The engine gives it the KV pools and keeps activations on
 * the device (`LLMOptions.deviceResident`).
 * @param name the `--backend` name, e.g. `'cuda'`
 * @param packageName the package `load` imports, e.g. `'@kvq/kernels-cuda'`
 * @param load the app's dynamic import of that package
 * @param dependent the app that lists it as an optional dependency (for the message), e.g. `'@kvq/cli'`
 */
export function gpuBackendCandidate(name: string, packageName: string, load: () => Promise<unknown>, dependent: string): BackendCandidate {
  return {
    name,
    load: async () => {
      let mod: { createBackend: (options?: Record<string, unknown>) => unknown };
      try {
        mod = (await load()) as typeof mod;
      } catch (error) {
        const code = (error as { code?: unknown } | null)?.code;
        if ((code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && String((error as Error).message).includes(packageName)) {
          throw new Error(`not installed (${packageName}, an optional dependency of ${dependent}: install it to use ${name})`, { cause: error });
        }
        throw error;
      }
      return { createBackend: (options?: Record<string, unknown>) => mod.createBackend({ residentWeights: true, ...options }) };
    },
  };
}

const emitted = new Set<string>();

function isAuto(choice: string | undefined): boolean {
  return choice === undefined || choice.trim() === '' || choice.trim() === 'auto';
}

/**
 * Load the backend an engine runs on. An object is used as is; `'reference'` is the built-in backend; another
 * name must load; `'auto'` / `undefined` picks the best available (`KVQ_BACKEND` first), and a fallback to the
 * reference backend is reported once through `onWarning` (default `process.emitWarning`).
 * @throws KernelError `BACKEND_UNAVAILABLE` (from `@kvq/kernels`) when an explicitly named backend, or the one
 *   `KVQ_BACKEND` names, cannot load; the message holds the reason, `argument` is `'backend'` or `'KVQ_BACKEND'`.
 */
export async function selectBackend(options: SelectBackendOptions = {}): Promise<LoadedBackend> {
  const choice = options.backend;
  if (typeof choice === 'object') return { backend: choice, rejected: [] };
  if (choice?.trim() === 'reference') return { backend: createReferenceBackend(), rejected: [] };
  const candidates = options.candidates ?? ENGINE_BACKEND_CANDIDATES;
  const loaded = await loadBackend({
    ...(isAuto(choice) ? {} : { require: choice }),
    ...('env' in options ? { env: options.env } : {}),
    candidates,
  });
  if (loaded.fallback !== undefined) {
    const warning: BackendWarning = { code: BACKEND_FALLBACK_WARNING, message: loaded.fallback, backend: loaded.backend.name, rejected: loaded.rejected };
    if (options.onWarning) options.onWarning(warning);
    else if (!emitted.has(warning.message)) {
      emitted.add(warning.message);
      process.emitWarning(warning.message, { type: 'KvqWarning', code: BACKEND_FALLBACK_WARNING });
    }
  }
  return loaded;
}
