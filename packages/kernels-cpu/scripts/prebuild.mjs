#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Builds the prebuilt binary of one platform package: node-gyp compiles csrc/ for --platform into its own build
// directory (prebuild/<triple>/build, so the local build/Release stays untouched), the binary is checked (file
// format and architecture from its header; loaded in a child process when this machine can run it), stripped,
// and copied to packages/kernels-cpu/npm/<triple>/kvq_cpu.node (or --out). Never downloads anything: Node's headers
// come from this machine (native-env.mjs), exactly as for build:native.
//
// Usage: node scripts/prebuild.mjs --platform <triple> [--out <file>] [--jobs <n>]
//   triples: linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, darwin-arm64, darwin-x64, win32-x64-gnu.
//   Each is built on its own OS, except: linux-arm64-gnu can also be cross-compiled on linux-x64 with Debian's
//   g++-aarch64-linux-gnu (CC/CXX/AR/LINK default to the aarch64-linux-gnu- tools; set them to override), and
//   win32-x64-gnu is only cross-compiled, on linux-x64 with MinGW-w64 (mingw-build.mjs; Debian's
//   g++-mingw-w64-x86-64-posix), never with MSVC: scripts/wine-win64-check.mjs runs that exact binary in the
//   official Windows node.exe under wine.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { checkIsaUnits } from './isa-units.mjs';
import { binaryTarget, nodeGypToolchain, pkgDir } from './native-env.mjs';

const TRIPLES = {
  'linux-x64-gnu': { platform: 'linux', arch: 'x64', libc: 'glibc', format: 'elf' },
  'linux-arm64-gnu': { platform: 'linux', arch: 'arm64', libc: 'glibc', format: 'elf' },
  'linux-x64-musl': { platform: 'linux', arch: 'x64', libc: 'musl', format: 'elf' },
  'darwin-arm64': { platform: 'darwin', arch: 'arm64', format: 'mach-o' },
  'darwin-x64': { platform: 'darwin', arch: 'x64', format: 'mach-o' },
  'win32-x64-gnu': { platform: 'win32', arch: 'x64', format: 'pe', mingw: true },
};

const log = (msg) => process.stdout.write(`[kvq prebuild] ${msg}\n`);
function fail(msg) {
  process.stderr.write(`[kvq prebuild] ERROR: ${msg}\n`);
  process.exit(1);
}

let args;
try {
  args = parseArgs({ options: { platform: { type: 'string' }, out: { type: 'string' }, jobs: { type: 'string' } }, strict: true }).values;
} catch (e) {
  fail(`${e.message}. Usage: node scripts/prebuild.mjs --platform <${Object.keys(TRIPLES).join('|')}> [--out <file>] [--jobs <n>]`);
}
const triple = args.platform;
const spec = TRIPLES[triple];
if (!spec) fail(`--platform must be one of ${Object.keys(TRIPLES).join(', ')}; got ${JSON.stringify(triple)}`);

const hostLibc = () => {
  if (process.platform !== 'linux') return undefined;
  process.report.excludeNetwork = true;
  return typeof process.report.getReport().header?.glibcVersionRuntime === 'string' ? 'glibc' : 'musl';
};
const host = { platform: process.platform, arch: process.arch, libc: hostLibc() };
const isNative = !spec.mingw && host.platform === spec.platform && host.arch === spec.arch && (spec.libc === undefined || host.libc === spec.libc);
const linuxX64 = host.platform === 'linux' && host.arch === 'x64' && host.libc === 'glibc';
const isCross = !isNative && triple === 'linux-arm64-gnu' && linuxX64;
const isMingw = spec.mingw === true && linuxX64;
if (!isNative && !isCross && !isMingw) {
  fail(
    `${triple} is built ${spec.mingw ? 'with MinGW-w64 on linux-x64 glibc' : 'on its own platform'} (this is ` +
      `${host.platform}-${host.arch}${host.libc ? ` ${host.libc}` : ''}); linux-arm64-gnu can also be cross-compiled ` +
      'on linux-x64 glibc. The release workflow builds each on a suitable runner.',
  );
}
if (isMingw) await prebuildMingw();

/** win32-x64-gnu: MinGW-w64 cross build (no node-gyp, no Node headers: node-api-headers), then the shared tail. */
async function prebuildMingw() {
  const { mingwBuild, mingwTools } = await import('./mingw-build.mjs');
  const dir = join(pkgDir, 'prebuild', triple);
  rmSync(dir, { recursive: true, force: true });
  let built;
  try {
    built = await mingwBuild({ outDir: dir, jobs: Number(args.jobs ?? process.env.KVQ_NATIVE_JOBS ?? availableParallelism()), log });
  } catch (e) {
    fail(e.message);
  }
  checkUnits(dir, mingwTools().strip);
  finish(built, [mingwTools().strip, '--strip-unneeded'], 'cross build: not loaded here (scripts/wine-win64-check.mjs loads and runs it in node.exe under wine)');
  process.exit(0);
}

const { nodedir, nodeGyp } = nodeGypToolchain(fail);

const env = { ...process.env, npm_config_devdir: join(pkgDir, 'build', '.node-gyp') };
let strip = process.platform === 'linux' ? ['strip', '--strip-unneeded'] : process.platform === 'darwin' ? ['strip', '-x'] : undefined;
if (isCross) {
  const tool = (name, def) => env[name] || def;
  env.CC = tool('CC', 'aarch64-linux-gnu-gcc');
  env.CXX = tool('CXX', 'aarch64-linux-gnu-g++');
  env.AR = tool('AR', 'aarch64-linux-gnu-ar');
  env.LINK = tool('LINK', env.CXX);
  // node-gyp compiles its host tools (none in this binding.gyp) with the *_host variables.
  env.CC_host ??= 'gcc';
  env.CXX_host ??= 'g++';
  strip = [tool('STRIP', 'aarch64-linux-gnu-strip'), '--strip-unneeded'];
  const probe = spawnSync(env.CXX, ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    fail(`cross compiler ${env.CXX} not found: apt-get install -y --no-install-recommends g++-aarch64-linux-gnu (or set CXX)`);
  }
  log(`cross-compiling for arm64 with ${probe.stdout.split('\n')[0]}`);
}

// Own build directory: node-gyp always builds into <dir>/build next to <dir>/binding.gyp, so <dir> is a staging
// folder holding links to binding.gyp and csrc/ (gyp resolves sources relative to the staging folder; other
// packages' headers are found by Node module resolution from there, which walks up into this package).
const stage = join(pkgDir, 'prebuild', triple);
rmSync(stage, { recursive: true, force: true });
mkdirSync(stage, { recursive: true });
symlinkSync(join(pkgDir, 'binding.gyp'), join(stage, 'binding.gyp'), 'file');
symlinkSync(join(pkgDir, 'csrc'), join(stage, 'csrc'), process.platform === 'win32' ? 'junction' : 'dir');

function gyp(argv) {
  const full = [`--directory=${stage}`, ...argv];
  log(`node-gyp ${full.join(' ')}`);
  const r = spawnSync(process.execPath, [nodeGyp, ...full], { cwd: stage, env, stdio: 'inherit' });
  if (r.error) fail(`could not run node-gyp: ${r.error.message}`);
  if (r.status !== 0) fail(`node-gyp ${argv[0]} failed (exit ${r.status}); see the output above`);
}
const jobs = args.jobs ?? process.env.KVQ_NATIVE_JOBS ?? String(availableParallelism());
gyp(['configure', `--nodedir=${nodedir}`, '--release', `--arch=${spec.arch}`]);
gyp(['build', `--nodedir=${nodedir}`, '--release', `--jobs=${jobs}`]);

const built = join(stage, 'build', 'Release', 'kvq_cpu.node');
if (!existsSync(built)) fail(`node-gyp reported success but ${built} does not exist`);
checkUnits(join(stage, 'build'), strip?.[0]);
finish(built, strip, 'cross build: not loaded here (scripts/qemu-arm64-check.mjs loads and runs it under qemu-aarch64)');

/**
 * Fails unless every ISA-flagged object exports only its table function (isa-units.mjs: the rule that keeps ISA code
 * out of the baseline). `stripTool` names the target's binutils: its nm is the same name with `nm` for `strip`.
 */
function checkUnits(buildDir, stripTool) {
  if (!stripTool) {
    log('ISA units: not checked (no binutils known for this platform)');
    return;
  }
  const nm = stripTool.replace(/strip$/, 'nm');
  const { checked, problems } = checkIsaUnits(buildDir, nm);
  if (checked.length === 0) fail(`no ISA objects (kernels_<isa>.o) under ${buildDir}: the build layout changed; update scripts/isa-units.mjs`);
  if (problems.length > 0) {
    fail(`ISA units export symbols the linker could share with baseline code (SIGILL on CPUs without the ISA):\n  ${problems.join('\n  ')}`);
  }
  log(`ISA units export only their tables: ${checked.map((o) => o.split(/[\\/]/).pop()).join(', ')}`);
}

/** Checks the binary's header, strips it, loads it when this machine can, copies it into the platform package. */
function finish(built, strip, notLoaded) {
  const got = binaryTarget(readFileSync(built));
  if (!got || got.format !== spec.format || got.arch !== spec.arch) {
    fail(`${built} is ${got ? `${got.format} ${got.arch}` : 'not a binary this script knows'}, expected ${spec.format} ${spec.arch}`);
  }
  if (strip) {
    const r = spawnSync(strip[0], [...strip.slice(1), built], { stdio: 'inherit' });
    if (r.error || r.status !== 0) fail(`${strip.join(' ')} ${built} failed: ${r.error?.message ?? `exit ${r.status}`}`);
  }

  if (isNative) {
    // Load it in a child process first: a broken binary must not take the caller down.
    const probe = spawnSync(
      process.execPath,
      ['-e', `const a=require(${JSON.stringify(built)});const i=a.cpuInfo();console.log(JSON.stringify({abi:a.abi,isas:i.isas,cpus:i.cpus}))`],
      { encoding: 'utf8' },
    );
    if (probe.status !== 0) fail(`the built binary does not load: ${probe.stderr.trim()}`);
    log(`loads: ${probe.stdout.trim()}`);
  } else {
    log(notLoaded);
  }

  const out = resolve(args.out ?? join(pkgDir, 'npm', triple, 'kvq_cpu.node'));
  if (!args.out && !existsSync(dirname(out))) fail(`platform package folder ${dirname(out)} does not exist`);
  mkdirSync(dirname(out), { recursive: true });
  copyFileSync(built, out);
  log(`${triple}: ${out} (${readFileSync(out).length} bytes, ${got.format} ${got.arch})`);
}
