/**
 * Which prebuilt platform package holds the native addon for a process: `@kvq/kernels-cpu-<triple>`, where the
 * triple is `<platform>-<arch>` plus the C library on Linux (`gnu` = glibc, `musl`) and the toolchain on Windows
 * (`gnu` = MinGW-w64: the Windows binary is cross-built with it, and loads in the official MSVC-built node.exe
 * because N-API is a C ABI), the napi-rs naming. Pure functions of an injectable {@link ProcessTarget}, so every platform can be
 * tested on any machine.
 * @module
 */

/** The platform triples a prebuilt binary is published for (one package `@kvq/kernels-cpu-<triple>` each). */
export const PREBUILT_TRIPLES = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'darwin-arm64',
  'darwin-x64',
  'win32-x64-gnu',
] as const;

/** One of {@link PREBUILT_TRIPLES}. */
export type PrebuiltTriple = (typeof PREBUILT_TRIPLES)[number];

/** The C library of a Linux process; `undefined` elsewhere. */
export type Libc = 'glibc' | 'musl';

/** What selects a platform package: `process.platform`, `process.arch`, and on Linux the C library. */
export interface ProcessTarget {
  /** `process.platform`, e.g. `'linux'`, `'darwin'`, `'win32'`. */
  readonly platform: string;
  /** `process.arch`, e.g. `'x64'`, `'arm64'`. */
  readonly arch: string;
  /** The C library the process runs on (Linux only; ignored elsewhere). */
  readonly libc?: Libc | undefined;
}

/** The platform package for a target, or why there is none. */
export type PlatformPackage =
  | { readonly supported: true; readonly triple: PrebuiltTriple; readonly name: string }
  | { readonly supported: false; readonly triple: string; readonly reason: string };

/** npm name of the platform package for `triple`. */
function platformPackageName(triple: PrebuiltTriple): string {
  return `@kvq/kernels-cpu-${triple}`;
}

/**
 * The C library of this process, as sharp and napi-rs detect it: a glibc process reports
 * `header.glibcVersionRuntime` in its diagnostic report, a musl process does not. `undefined` off Linux.
 * NOTE: `process.report.excludeNetwork` is set first so the report never does DNS lookups.
 */
function detectLibc(): Libc | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    (process.report as { excludeNetwork?: boolean }).excludeNetwork = true; // Node >= 20.13; older ones ignore it
    const header = (process.report.getReport() as { header?: { glibcVersionRuntime?: unknown } }).header;
    return typeof header?.glibcVersionRuntime === 'string' ? 'glibc' : 'musl';
  } catch {
    // No report (a stripped-down runtime): glibc is by far the common case and a wrong guess only means the
    // glibc package fails to load, which is reported.
    return 'glibc';
  }
}

/** This process's {@link ProcessTarget} (computed once; the report is not free). */
export function currentTarget(): ProcessTarget {
  cachedTarget ??= { platform: process.platform, arch: process.arch, libc: detectLibc() };
  return cachedTarget;
}
let cachedTarget: ProcessTarget | undefined;

/** The triple of a target, whether or not a package is published for it (`'freebsd-x64'`, `'linux-x64-musl'`). */
export function targetTriple(target: ProcessTarget): string {
  const base = `${target.platform}-${target.arch}`;
  if (target.platform === 'linux') return `${base}-${target.libc === 'musl' ? 'musl' : 'gnu'}`;
  if (target.platform === 'win32') return `${base}-gnu`;
  return base;
}

/** The platform package for `target` (default: this process), or why none is published for it. */
export function platformPackage(target: ProcessTarget = currentTarget()): PlatformPackage {
  const triple = targetTriple(target);
  const known = (PREBUILT_TRIPLES as readonly string[]).includes(triple);
  if (known) return { supported: true, triple: triple as PrebuiltTriple, name: platformPackageName(triple as PrebuiltTriple) };
  return {
    supported: false,
    triple,
    reason: `no prebuilt binary is published for ${triple} (prebuilt: ${PREBUILT_TRIPLES.join(', ')})`,
  };
}
