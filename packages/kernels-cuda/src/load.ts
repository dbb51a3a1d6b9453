/**
 * Finding, probing and loading the native GPU addon without ever taking the process down:
 *
 * 1. {@link probeAddon} first loads the addon in a CHILD Node process and asks the vendor runtime what it sees
 *    (driver, devices). A binary that segfaults or aborts on load, a missing driver or no device all end up as a
 *    reason string; the calling process never touched the binary.
 * 2. Only then {@link loadAddon} `require`s it in-process (inside try/catch, ABI and vendor checked).
 *
 * The same code serves `@kvq/kernels-rocm` through a {@link GpuVendorSpec}.
 * @module
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { firstLine, NATIVE_ABI, notLoadedReason, tryLoadNative, type NativeLoad } from '@kvq/kernels/native';
import type { GpuVendor, NativeAddon, NativeProbe } from './addon-types.js';

/** What differs between the CUDA and the ROCm package. */
export interface GpuVendorSpec {
  /** Backend name (`KVQ_BACKEND` value): `'cuda'` or `'rocm'`. */
  readonly name: string;
  /** The vendor the addon must report. */
  readonly vendor: GpuVendor;
  /** Human name, e.g. `'CUDA'`. */
  readonly label: string;
  /** Package name, for messages. */
  readonly packageName: string;
  /** Environment variable holding an explicit addon path (tried first). */
  readonly addonEnv: string;
  /** Environment variable selecting the device ordinal. */
  readonly deviceEnv: string;
  /** Default addon paths, in order. */
  readonly defaultPaths: () => string[];
  /** How to build the addon (appended to "not built" reasons). */
  readonly buildHint: string;
  /** Whether a device architecture (`GpuDeviceInfo.arch`) uses FNUZ FP8 (sets `BackendInfo.fp8Fnuz`). Default: never. */
  readonly fp8Fnuz?: ((arch: string) => boolean) | undefined;
  /**
   * A cheap check run before the child-process probe (which costs a Node start, ~0.1-0.2 s): the reason the vendor
   * driver is certainly absent on this machine, or `undefined` when it may be there (the probe then decides). It
   * keeps `'auto'` backend selection on CPU-only machines that have a built addon (a CUDA toolkit, no GPU) as fast
   * as on those without one. Default: none (always probe).
   */
  readonly driverAbsent?: (() => string | undefined) | undefined;
}

/** Device nodes one of which the NVIDIA driver provides on Linux: the control node, the driver's proc entry, WSL2's GPU. */
export const NVIDIA_DRIVER_NODES: readonly string[] = Object.freeze(['/dev/nvidiactl', '/proc/driver/nvidia/version', '/dev/dxg']);

/**
 * `driverAbsent` of {@link CUDA_SPEC}: on Linux, no NVIDIA driver when none of {@link NVIDIA_DRIVER_NODES} exists
 * (containers with GPUs get them from the NVIDIA container runtime); elsewhere it cannot tell (`undefined`).
 * @param platform default `process.platform`
 * @param exists default `fs.existsSync`
 */
export function nvidiaDriverAbsent(platform: NodeJS.Platform = process.platform, exists: (path: string) => boolean = existsSync): string | undefined {
  if (platform !== 'linux') return undefined;
  if (NVIDIA_DRIVER_NODES.some((p) => exists(p))) return undefined;
  return `no NVIDIA driver on this machine (none of ${NVIDIA_DRIVER_NODES.join(', ')} exists), so no CUDA device can be used (KVQ_GPU_PROBE=always probes anyway)`;
}

/** The CUDA package's spec. */
export const CUDA_SPEC: GpuVendorSpec = Object.freeze({
  name: 'cuda',
  vendor: 'cuda',
  label: 'CUDA',
  packageName: '@kvq/kernels-cuda',
  addonEnv: 'KVQ_CUDA_ADDON',
  deviceEnv: 'KVQ_CUDA_DEVICE',
  // src/ and dist/ are both one level below the package root.
  defaultPaths: () => [fileURLToPath(new URL('../build/Release/kvq_cuda.node', import.meta.url))],
  buildHint:
    'Build it with `pnpm --filter @kvq/kernels-cuda build:gpu` (needs the CUDA toolkit: nvcc and libcudart_static.a), or point KVQ_CUDA_ADDON at a kvq_cuda.node',
  driverAbsent: () => nvidiaDriverAbsent(),
});

/** Candidate addon paths of a spec: `env[spec.addonEnv]` first, then the defaults. */
export function addonCandidates(spec: GpuVendorSpec = CUDA_SPEC, env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  const explicit = env[spec.addonEnv];
  if (explicit) out.push(explicit);
  out.push(...spec.defaultPaths());
  return out;
}

/** Outcome of {@link loadAddon}. */
export type AddonLoad = NativeLoad<NativeAddon>;

/**
 * Try `paths` in order (uncached): the first that exists, loads, has the right ABI and vendor wins. Never throws.
 * `requireFn` defaults to this module's `require`.
 */
export function tryLoadAddon(
  paths: readonly string[],
  spec: GpuVendorSpec = CUDA_SPEC,
  requireFn: NodeJS.Require = createRequire(import.meta.url),
): AddonLoad {
  return tryLoadNative<NativeAddon>(paths, {
    abi: NATIVE_ABI,
    accept: (addon) => (addon.vendor === spec.vendor ? undefined : `built for ${String(addon.vendor)}, not ${spec.vendor}`),
    hint: spec.buildHint,
    requireFn,
  });
}

const loads = new Map<string, AddonLoad>();

/** Load the addon of a spec once per process (success or failure is cached). Never throws. */
export function loadAddon(spec: GpuVendorSpec = CUDA_SPEC): AddonLoad {
  const key = `${spec.name}\0${addonCandidates(spec).join('\0')}`;
  let r = loads.get(key);
  if (!r) {
    r = tryLoadAddon(addonCandidates(spec), spec);
    loads.set(key, r);
  }
  return r;
}

/** Outcome of {@link probeAddon}. */
export type AddonProbe =
  | { readonly ok: true; readonly path: string; readonly probe: NativeProbe }
  | { readonly ok: false; readonly reason: string; readonly path?: string; readonly probe?: NativeProbe };

const PROBE_MARK = 'KVQ_GPU_PROBE ';

/**
 * Load the addon at `path` in a child Node process and return what its runtime sees (driver, devices). A crash,
 * hang (`timeoutMs`), wrong ABI or vendor, or "no device" becomes `{ ok: false, reason }`. Never throws.
 */
export function probeInChild(path: string, spec: GpuVendorSpec = CUDA_SPEC, timeoutMs = 60_000): AddonProbe {
  const script =
    `let r;` +
    `try { const a = require(${JSON.stringify(path)});` +
    `r = { abi: a.abi, vendor: a.vendor, probe: typeof a.probe === 'function' ? a.probe() : null }; }` +
    `catch (e) { r = { error: String(e && e.message || e).split('\\n')[0] }; }` +
    `process.stdout.write(${JSON.stringify(PROBE_MARK)} + JSON.stringify(r) + '\\n');`;
  const r = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    env: { ...process.env, KVQ_BACKEND: '' },
    maxBuffer: 1 << 20,
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT') {
    return { ok: false, path, reason: `the ${spec.label} probe of ${path} timed out after ${timeoutMs} ms` };
  }
  if (r.signal) return { ok: false, path, reason: `the ${spec.label} probe of ${path} crashed with ${r.signal}` };
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith(PROBE_MARK));
  if (r.status !== 0 || !line) {
    const tail = `${r.stderr ?? ''}`.trim().split('\n').slice(-2).join(' | ');
    return { ok: false, path, reason: `the ${spec.label} probe of ${path} exited with ${String(r.status)}${tail ? `: ${tail}` : ''}` };
  }
  let parsed: { abi?: unknown; vendor?: unknown; probe?: NativeProbe | null; error?: string };
  try {
    parsed = JSON.parse(line.slice(PROBE_MARK.length)) as typeof parsed;
  } catch (e) {
    return { ok: false, path, reason: `the ${spec.label} probe printed unreadable output: ${firstLine(e)}` };
  }
  if (parsed.error !== undefined) return { ok: false, path, reason: `${path} does not load: ${parsed.error}` };
  if (parsed.abi !== NATIVE_ABI) {
    return { ok: false, path, reason: `${path} is a stale or foreign build (ABI ${String(parsed.abi)}, this package needs ${NATIVE_ABI}). ${spec.buildHint}` };
  }
  if (parsed.vendor !== spec.vendor || !parsed.probe) {
    return { ok: false, path, reason: `${path} was built for ${String(parsed.vendor)}, not ${spec.vendor}` };
  }
  const probe = parsed.probe;
  if (!probe.ok) return { ok: false, path, probe, reason: probe.reason ?? `no usable ${spec.label} device` };
  return { ok: true, path, probe };
}

const probes = new Map<string, AddonProbe>();

/**
 * Probe the first existing addon candidate of `spec` in a child process (cached per process). Never throws.
 * `{ ok: false }` says why the backend cannot run here: not built, does not load, no driver, no device. Without a
 * built addon, or when `spec.driverAbsent` says there is no driver, no child process is started
 * (`KVQ_GPU_PROBE=always` skips that driver check, for drivers whose nodes are elsewhere).
 */
export function probeAddon(spec: GpuVendorSpec = CUDA_SPEC, timeoutMs = 60_000): AddonProbe {
  const candidates = addonCandidates(spec);
  const key = `${spec.name}\0${candidates.join('\0')}`;
  const cached = probes.get(key);
  if (cached) return cached;
  const path = candidates.find((p) => existsSync(p));
  // KVQ_GPU_PROBE=always: probe even where the driver check sees no driver (driver nodes in unusual places).
  const absent = path === undefined || process.env.KVQ_GPU_PROBE === 'always' ? undefined : spec.driverAbsent?.();
  const result: AddonProbe =
    path === undefined
      ? { ok: false, reason: notLoadedReason(candidates.map((p) => ({ path: p, error: 'not found' })), spec.buildHint) }
      : absent !== undefined
        ? { ok: false, path, reason: absent }
        : probeInChild(path, spec, timeoutMs);
  probes.set(key, result);
  return result;
}
