// SPDX-License-Identifier: Apache-2.0
//
// Builds the GPU addon of @kvq/kernels-cuda (nvcc) or @kvq/kernels-rocm (hipcc, HIP_PLATFORM=amd) from the one
// kernel source in packages/kernels-cuda/csrc. Used by both packages' `build:gpu` scripts. Never installs or
// downloads anything:
//
// 1. no compiler (nvcc / hipcc) -> a message saying so, exit 0 (the package then reports itself unavailable);
// 2. compile the kernel sources (runtime.cu, ops.cu, attention.cu) for every target - this alone is the CI
//    compile check: a kernel that does not compile fails the build;
// 3. when the Node headers, node-addon-api and the vendor runtime library (libcudart_static.a / libamdhip64.so)
//    are present, compile csrc/addon.cc and link build/Release/kvq_<cuda|rocm>.node, then load it in a child
//    process and print what its probe sees (no GPU here is fine: it says why).
//
// Environment:
//   KVQ_SKIP_NATIVE=1        skip everything
//   KVQ_REQUIRE_GPU_COMPILERS=1  a missing nvcc / hipcc is an error, not a skip (CI sets it: kernels must compile)
//   CUDA_HOME / CUDA_PATH    CUDA toolkit (default: from nvcc on PATH, then /usr/local/cuda)
//   ROCM_PATH                ROCm (default: from hipcc on PATH, then /opt/rocm)
//   KVQ_CUDA_ARCHS           SASS targets, default "80;89;90" (+ PTX of the highest, for newer GPUs)
//   KVQ_HIP_ARCHS            offload targets, default "gfx90a;gfx940;gfx942;gfx950" (those the compiler knows)
//   KVQ_HIP_CHECK_CLANG      a newer clang that compile-checks the targets hipcc lacks (default: clang-20..17 on
//                            PATH; "0" disables)
//   KVQ_NODEDIR              directory whose include/node/ holds node_api.h
//   KVQ_NODE_ADDON_API_DIR   directory holding napi.h (default: the installed node-addon-api)
//   KVQ_NATIVE_FLAGS         extra flags for every compile
//   KVQ_NATIVE_JOBS          parallel compiles (default: CPUs, at most 4)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SOURCES = ['runtime.cu', 'ops.cu', 'wquant.cu', 'kvquant.cu', 'attention.cu'];

function which(cmd) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, cmd);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** A directory D such that D/include/node/node_api.h exists, without downloading anything. */
export function findNodeDir() {
  const candidates = [];
  if (process.env.KVQ_NODEDIR) candidates.push(process.env.KVQ_NODEDIR);
  if (process.env.npm_config_nodedir) candidates.push(process.env.npm_config_nodedir);
  candidates.push(resolve(dirname(process.execPath), '..'));
  const prefix = process.config?.variables?.node_prefix;
  if (typeof prefix === 'string' && prefix.length > 0) candidates.push(prefix);
  candidates.push('/usr', '/usr/local');
  return candidates.find((dir) => existsSync(join(dir, 'include', 'node', 'node_api.h')));
}

/**
 * The folder holding the FP8 conversion header shared by every native backend (`fp8.h`, published in @kvq/kernels's
 * `csrc/`), found by package resolution from `pkgDir` (the package being built), then from this script's package,
 * then the monorepo sibling `packages/kernels/csrc` (a checkout without node_modules). Works in the monorepo and in an
 * installed tarball alike. Exits with a message when @kvq/kernels is not installed.
 * @param {string} pkgDir
 * @returns {string}
 */
export function kernelsIncludeDir(pkgDir) {
  const tried = [];
  for (const from of [join(pkgDir, 'package.json'), fileURLToPath(import.meta.url)]) {
    try {
      const dir = join(dirname(createRequire(from).resolve('@kvq/kernels/package.json')), 'csrc');
      if (existsSync(join(dir, 'fp8.h'))) return dir;
      tried.push(`${dir} has no fp8.h`);
    } catch (e) {
      tried.push(`cannot resolve @kvq/kernels from ${from}: ${String(e?.message ?? e).split('\n')[0]}`);
    }
  }
  // A bare copy of the monorepo without node_modules (tooling/gpu-check.sh on a GPU machine): the sibling package.
  const sibling = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'kernels', 'csrc');
  if (existsSync(join(sibling, 'fp8.h'))) return sibling;
  tried.push(`${sibling} has no fp8.h`);
  process.stderr.write(`[kvq build] ERROR: the shared FP8 header (@kvq/kernels csrc/fp8.h) was not found (${tried.join('; ')}). Install @kvq/kernels (a dependency of this package).\n`);
  process.exit(1);
}

function findCuda() {
  const nvcc = [process.env.CUDA_HOME, process.env.CUDA_PATH]
    .filter(Boolean)
    .map((d) => join(d, 'bin', 'nvcc'))
    .find(existsSync) ?? which('nvcc') ?? ['/usr/local/cuda/bin/nvcc'].find(existsSync);
  if (!nvcc) return undefined;
  // nvcc may be a symlink into the toolkit; the toolkit is the parent of its real bin/.
  let home = process.env.CUDA_HOME || process.env.CUDA_PATH;
  if (!home) {
    const real = spawnSync('readlink', ['-f', nvcc], { encoding: 'utf8' }).stdout?.trim() || nvcc;
    home = resolve(dirname(real), '..');
  }
  const libDirs = [join(home, 'lib64'), join(home, 'lib'), join(home, 'targets', 'x86_64-linux', 'lib'), '/usr/local/cuda/lib64'];
  const cudartStatic = libDirs.map((d) => join(d, 'libcudart_static.a')).find(existsSync);
  const version = spawnSync(nvcc, ['--version'], { encoding: 'utf8' }).stdout?.match(/release ([\d.]+)/)?.[1];
  return { nvcc, home, cudartStatic, version };
}

function findRocm() {
  const hipcc = [process.env.ROCM_PATH].filter(Boolean).map((d) => join(d, 'bin', 'hipcc')).find(existsSync) ?? which('hipcc') ??
    ['/opt/rocm/bin/hipcc'].find(existsSync);
  if (!hipcc) return undefined;
  const libDirs = [process.env.ROCM_PATH && join(process.env.ROCM_PATH, 'lib'), '/opt/rocm/lib', '/usr/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib'].filter(
    Boolean,
  );
  const libDir = libDirs.find((d) => existsSync(join(d, 'libamdhip64.so')));
  const version = spawnSync(hipcc, ['--version'], { encoding: 'utf8', env: { ...process.env, HIP_PLATFORM: 'amd' } }).stdout?.match(
    /HIP version: ([\d.]+)/,
  )?.[1];
  return { hipcc, libDir, version };
}

/** Run `cmd args` asynchronously; resolves { status, output }. */
function run(cmd, args, env) {
  return new Promise((resolveRun) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', (e) => resolveRun({ status: 127, output: `${output}${e.message}` }));
    child.on('close', (status) => resolveRun({ status: status ?? 1, output }));
  });
}

/** Run jobs (functions returning promises) with at most `n` in flight; results in order. */
async function pool(jobs, n) {
  const results = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, jobs.length) }, worker));
  return results;
}

/**
 * Build (or compile-check) the GPU addon.
 * `quick` (the test command's `build:gpu:quick`): one target per vendor by default (sm_90 + its PTX; the first of
 * gfx942 / gfx940 the compiler knows), so every source is still compiled by nvcc / hipcc in every test run, in a
 * fraction of the time; `build:gpu` (users, releases) builds every default target. KVQ_CUDA_ARCHS / KVQ_HIP_ARCHS
 * override both.
 * @param {{ vendor: 'cuda' | 'hip', pkgDir: string, csrcDir: string, outName: string, label: string, compileOnly?: boolean, quick?: boolean }} o
 * @returns {Promise<{ status: 'skipped' | 'compiled' | 'linked', reason?: string, addon?: string, targets: string[] }>}
 */
export async function buildGpuAddon(o) {
  const log = (msg) => process.stdout.write(`[${o.label} build:gpu] ${msg}\n`);
  const fail = (msg) => {
    process.stderr.write(`[${o.label} build:gpu] ERROR: ${msg}\n`);
    process.exit(1);
  };
  if (process.env.KVQ_SKIP_NATIVE === '1') {
    log(`KVQ_SKIP_NATIVE=1: skipping; ${o.label} will report itself unavailable.`);
    return { status: 'skipped', reason: 'KVQ_SKIP_NATIVE=1', targets: [] };
  }
  const started = Date.now();
  const outDir = join(o.pkgDir, 'build', 'Release');
  const objDir = join(outDir, 'obj');
  mkdirSync(objDir, { recursive: true });
  const sharedInclude = kernelsIncludeDir(o.pkgDir);
  const extra = [`-I${sharedInclude}`, ...(process.env.KVQ_NATIVE_FLAGS ?? '').split(/\s+/).filter(Boolean)];
  const jobs = Math.max(1, Math.min(4, Number(process.env.KVQ_NATIVE_JOBS) || availableParallelism()));
  let compileJobs;
  let targets;
  let link;
  let env = process.env;

  if (o.vendor === 'cuda') {
    const cuda = findCuda();
    if (!cuda) {
      if (process.env.KVQ_REQUIRE_GPU_COMPILERS === '1') fail('KVQ_REQUIRE_GPU_COMPILERS=1 but no nvcc (PATH, CUDA_HOME, /usr/local/cuda)');
      log('no CUDA toolkit (nvcc not on PATH, in CUDA_HOME or /usr/local/cuda): skipping the CUDA build. @kvq/kernels-cuda will report itself unavailable.');
      return { status: 'skipped', reason: 'nvcc not found', targets: [] };
    }
    const archs = (process.env.KVQ_CUDA_ARCHS ?? (o.quick ? '90' : '80;89;90')).split(/[;,\s]+/).filter(Boolean);
    if (archs.some((a) => !/^\d+[a-z]?$/.test(a))) fail(`KVQ_CUDA_ARCHS must list compute capabilities like "80;89;90", got ${process.env.KVQ_CUDA_ARCHS}`);
    const top = archs[archs.length - 1];
    targets = [...archs.map((a) => `sm_${a}`), `compute_${top}`];
    log(`nvcc ${cuda.version ?? '?'} (${cuda.nvcc}); targets ${targets.join(', ')}`);
    const gencode = archs.flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`]);
    gencode.push('-gencode', `arch=compute_${top},code=compute_${top}`);
    const flags = [
      '-std=c++17', '-O3', '-Xcompiler', '-fPIC', '-Xcompiler', '-fvisibility=hidden',
      // IEEE float32 semantics the contract relies on (these are nvcc's defaults; stated so nobody "optimizes" them).
      '-ftz=false', '-prec-div=true', '-prec-sqrt=true',
      `-DKVQ_TARGETS=${targets.join('+')}`, ...gencode, ...extra,
    ];
    compileJobs = SOURCES.map((src) => () => run(cuda.nvcc, [...flags, '-c', join(o.csrcDir, src), '-o', join(objDir, `${src}.o`)], env));
    link = cuda.cudartStatic
      ? { libs: [cuda.cudartStatic, '-ldl', '-lrt', '-lpthread'] }
      : { missing: `no libcudart_static.a under ${cuda.home} (a compile-only toolkit)` };
  } else {
    const rocm = findRocm();
    if (!rocm) {
      if (process.env.KVQ_REQUIRE_GPU_COMPILERS === '1') fail('KVQ_REQUIRE_GPU_COMPILERS=1 but no hipcc (PATH, ROCM_PATH, /opt/rocm); apt-get install hipcc libamdhip64-dev rocm-device-libs');
      log(
        'no hipcc (not on PATH, in ROCM_PATH or /opt/rocm): skipping the HIP build. @kvq/kernels-rocm will report itself ' +
          'unavailable. On Debian/Ubuntu: apt-get install hipcc libamdhip64-dev rocm-device-libs',
      );
      return { status: 'skipped', reason: 'hipcc not found', targets: [] };
    }
    env = { ...process.env, HIP_PLATFORM: 'amd' };
    const wanted = (process.env.KVQ_HIP_ARCHS ?? (o.quick ? 'gfx942;gfx940' : 'gfx90a;gfx940;gfx942;gfx950')).split(/[;,\s]+/).filter(Boolean);
    // Keep the targets this compiler knows (ROCm 5.2's clang 15 has gfx90a and gfx940 but not gfx942 / gfx950).
    const probeDir = join(tmpdir(), `kvq-hip-probe-${process.pid}`);
    mkdirSync(probeDir, { recursive: true });
    const probeSrc = join(probeDir, 'probe.hip');
    writeFileSync(probeSrc, '#include <hip/hip_runtime.h>\n__global__ void k(float* x) { x[threadIdx.x] += 1.0f; }\n');
    const known = await pool(
      wanted.map((a) => () => run(rocm.hipcc, ['-x', 'hip', `--offload-arch=${a}`, '--cuda-device-only', '-c', probeSrc, '-o', join(probeDir, `${a}.o`)], env)),
      jobs,
    );
    rmSync(probeDir, { recursive: true, force: true });
    targets = wanted.filter((_, i) => known[i].status === 0);
    if (o.quick && process.env.KVQ_HIP_ARCHS === undefined) targets = targets.slice(0, 1);
    const dropped = wanted.filter((_, i) => known[i].status !== 0);
    if (targets.length === 0) fail(`hipcc (${rocm.hipcc}) compiles none of ${wanted.join(', ')}: ${known[0]?.output.trim().split('\n').slice(-2).join(' ')}`);
    log(`hipcc ${rocm.version ?? '?'} (${rocm.hipcc}); targets ${targets.join(', ')}${dropped.length ? ` (this compiler lacks ${dropped.join(', ')})` : ''}`);
    const flags = [
      '-x', 'hip', '-std=c++17', '-O3', '-fPIC', '-fvisibility=hidden', '-Wno-unused-result',
      ...targets.map((a) => `--offload-arch=${a}`), `-DKVQ_TARGETS=${targets.join('+')}`, ...extra,
    ];
    compileJobs = SOURCES.map((src) => () => run(rocm.hipcc, [...flags, '-c', join(o.csrcDir, src), '-o', join(objDir, `${src}.hip.o`)], env));
    // Targets hipcc lacks (gfx942 with ROCm 5.2) may still be compile-checked by a newer clang (Debian 12 has
    // clang-19 + lld-19: gfx942 and gfx12xx, not gfx950) as device-only assembly, with the same HIP headers and no
    // device library (-nogpulib: calls into it stay unresolved, which assembly output allows). Not part of the addon.
    const checkClang =
      process.env.KVQ_HIP_CHECK_CLANG ?? ['clang-20', 'clang-19', 'clang-18', 'clang-17'].map((c) => which(c)).find(Boolean);
    if (dropped.length > 0 && checkClang && process.env.KVQ_HIP_CHECK_CLANG !== '0') {
      const hipPath = resolve(dirname(rocm.hipcc), '..');
      const devOnly = (arch) => ['-x', 'hip', `--offload-arch=${arch}`, '-std=c++17', '-O3', `--hip-path=${hipPath}`, '-nogpulib',
        '-D__HIP_PLATFORM_AMD__=1', '-Wno-unused-result', '--cuda-device-only', '-S'];
      const probeDir2 = join(tmpdir(), `kvq-hip-probe2-${process.pid}`);
      mkdirSync(probeDir2, { recursive: true });
      const src2 = join(probeDir2, 'probe.hip');
      writeFileSync(src2, '#include <hip/hip_runtime.h>\n__global__ void k(float* x) { x[threadIdx.x] += 1.0f; }\n');
      const ok2 = await pool(dropped.map((a) => () => run(checkClang, [...devOnly(a), src2, '-o', join(probeDir2, `${a}.s`)], env)), jobs);
      rmSync(probeDir2, { recursive: true, force: true });
      const extraArchs = dropped.filter((_, i) => ok2[i].status === 0);
      if (extraArchs.length > 0) {
        log(`${checkClang} compile-checks ${extraArchs.join(', ')} as device assembly (not in the addon)`);
        for (const a of extraArchs) {
          for (const src of SOURCES) {
            compileJobs.push(() => run(checkClang, [...devOnly(a), ...extra, join(o.csrcDir, src), '-o', join(objDir, `${src}.${a}.s`)], env));
          }
        }
        targets = [...targets, ...extraArchs.map((a) => `${a}(check)`)];
      }
    }
    link = rocm.libDir
      ? { libs: [`-L${rocm.libDir}`, `-Wl,-rpath,${rocm.libDir}`, '-lamdhip64', '-ldl', '-lpthread'] }
      : { missing: 'no libamdhip64.so (install libamdhip64-dev)' };
  }

  // 1. kernel sources (skipped when the objects are newer than every input and were built with the same flags)
  const objects = SOURCES.map((src) => join(objDir, o.vendor === 'cuda' ? `${src}.o` : `${src}.hip.o`));
  const stampFile = join(objDir, `${o.vendor}.stamp.json`);
  const stamp = JSON.stringify({ targets, extra, compiler: o.vendor });
  const inputs = [
    ...readdirSync(o.csrcDir).map((f) => join(o.csrcDir, f)),
    // The shared headers of @kvq/kernels (fp8.h, ops.h, napi_args.h).
    ...readdirSync(sharedInclude).map((f) => join(sharedInclude, f)),
    fileURLToPath(import.meta.url),
  ].filter(existsSync);
  const newestInput = Math.max(...inputs.map((f) => statSync(f).mtimeMs));
  const upToDate =
    existsSync(stampFile) &&
    readFileSync(stampFile, 'utf8') === stamp &&
    objects.every((f) => existsSync(f) && statSync(f).mtimeMs > newestInput);
  const results = upToDate ? [] : await pool(compileJobs, jobs);
  if (upToDate) log(`kernel objects are up to date (${targets.join(', ')})`);
  else writeFileSync(stampFile, stamp);
  results.forEach((r, i) => {
    const text = r.output.trim();
    const what = i < SOURCES.length ? SOURCES[i] : `${SOURCES[(i - SOURCES.length) % SOURCES.length]} (compile check)`;
    if (r.status !== 0) fail(`compiling ${what} failed (exit ${r.status}):\n${text}`);
    if (text) log(`${what}:\n${text}`);
  });
  if (!upToDate) log(`compiled ${SOURCES.join(', ')} for ${targets.join(', ')} in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // 2. the addon
  const nodeDir = findNodeDir();
  let addonApi = process.env.KVQ_NODE_ADDON_API_DIR;
  if (!addonApi) {
    try {
      // include_dir is relative to the current directory.
      addonApi = resolve(createRequire(join(o.pkgDir, 'package.json'))('node-addon-api').include_dir);
    } catch {
      addonApi = undefined;
    }
  }
  const missing = [
    o.compileOnly ? '--compile-only was given' : undefined,
    link.missing,
    nodeDir ? undefined : 'no Node headers (include/node/node_api.h; set KVQ_NODEDIR)',
    addonApi ? undefined : 'node-addon-api is not installed (run pnpm install, or set KVQ_NODE_ADDON_API_DIR)',
  ].filter(Boolean);
  if (missing.length > 0) {
    log(`kernels compile; not linking the addon: ${missing.join('; ')}.`);
    return { status: 'compiled', reason: missing.join('; '), targets };
  }
  const cxx = process.env.CXX || which('c++') || which('g++') || 'c++';
  const addonObj = join(objDir, `addon.${o.vendor}.o`);
  const cc = await run(
    cxx,
    [
      '-std=c++17', '-O2', '-fPIC', '-fvisibility=hidden', '-Wall', '-Wextra', '-Wno-unused-parameter',
      '-DNAPI_VERSION=8', '-DNODE_ADDON_API_CPP_EXCEPTIONS', '-DNODE_ADDON_API_CPP_EXCEPTIONS_ALL', '-DNODE_ADDON_API_DISABLE_DEPRECATED',
      `-I${addonApi}`, `-I${join(nodeDir, 'include', 'node')}`, ...extra, '-c', join(o.csrcDir, 'addon.cc'), '-o', addonObj,
    ],
    env,
  );
  if (cc.status !== 0) fail(`compiling addon.cc failed (exit ${cc.status}):\n${cc.output.trim()}`);
  const addon = join(outDir, o.outName);
  const tmp = `${addon}.tmp-${process.pid}`;
  const ld = await run(cxx, ['-shared', '-o', tmp, addonObj, ...objects, ...link.libs, '-Wl,--exclude-libs,ALL', '-static-libgcc'], env);
  if (ld.status !== 0) fail(`linking ${o.outName} failed (exit ${ld.status}):\n${ld.output.trim()}`);
  // Replace atomically: a process that has the old file mapped keeps it.
  rmSync(addon, { force: true });
  spawnSync('mv', [tmp, addon]);

  // 3. load it in a child process (a broken binary must not take the caller down) and report what it sees.
  const probe = spawnSync(process.execPath, ['-e', `const a=require(${JSON.stringify(addon)});console.log(JSON.stringify({abi:a.abi,vendor:a.vendor,targets:a.targets,probe:a.probe()}))`], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (probe.status !== 0) fail(`the built addon does not load: ${(probe.stderr || probe.stdout || String(probe.signal)).trim()}`);
  let seen = probe.stdout.trim();
  try {
    const j = JSON.parse(seen);
    seen = j.probe.ok
      ? `${j.probe.deviceCount} device(s): ${j.probe.devices.map((d) => `${d.name} (${d.arch})`).join(', ')}`
      : `no usable device here (${j.probe.reason})`;
  } catch {
    // print raw
  }
  log(`built ${addon} in ${((Date.now() - started) / 1000).toFixed(1)} s; ${seen}`);
  return { status: 'linked', addon, targets };
}
