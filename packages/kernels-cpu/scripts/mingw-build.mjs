// SPDX-License-Identifier: Apache-2.0
//
// Cross-compiles the win32-x64 kvq_cpu.node on Linux with MinGW-w64 (Debian: g++-mingw-w64-x86-64-posix), from
// the same binding.gyp node-gyp builds from: its targets, sources, defines and cflags_cc are read from the file,
// so there is one list of flags. Used by prebuild.mjs --platform win32-x64-gnu.
//
// How a MinGW addon loads in the official (MSVC-built) node.exe: N-API is a C ABI, and the napi_* functions are
// exported by node.exe itself; the import library for them is made from the .def file of the npm package
// node-api-headers (`dlltool -d node_api.def -D node.exe`), exactly as node-gyp does with node.lib for MSVC.
// libstdc++, libgcc and winpthread are linked statically, so the .node needs only Windows' own DLLs
// (KERNEL32, msvcrt) and node.exe; the build checks this and fails otherwise.
//
// NOTE: every translation unit is assembled with -muse-unaligned-vector-move: on Windows x64 GCC cannot align the
// stack beyond 16 bytes (GCC bug 54412), so an AVX/AVX-512 register spilled with vmovaps/vmovdqa may fault.
// Unaligned moves on aligned data cost the same on every CPU with AVX.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import { pkgDir } from './native-env.mjs';

/** Default MinGW-w64 tools (the posix-threads variant: std::thread needs it); override with KVQ_MINGW_CXX etc. */
export const MINGW_TOOLS = {
  cxx: 'x86_64-w64-mingw32-g++-posix',
  dlltool: 'x86_64-w64-mingw32-dlltool',
  strip: 'x86_64-w64-mingw32-strip',
  objdump: 'x86_64-w64-mingw32-objdump',
};
/** What to install when they are missing (Debian, Ubuntu). */
export const MINGW_APT = 'apt-get install -y --no-install-recommends g++-mingw-w64-x86-64-posix';

/** DLLs the addon may import: Windows' own and node.exe (case-insensitive). */
const ALLOWED_IMPORTS = /^(kernel32|msvcrt|advapi32|user32|ntdll|ucrtbase|api-ms-win-[a-z0-9-]+|node)\.(dll|exe)$/i;

/** The tools to use, from the environment (KVQ_MINGW_CXX, KVQ_MINGW_DLLTOOL, KVQ_MINGW_STRIP, KVQ_MINGW_OBJDUMP). */
export function mingwTools(env = process.env) {
  return {
    cxx: env.KVQ_MINGW_CXX || MINGW_TOOLS.cxx,
    dlltool: env.KVQ_MINGW_DLLTOOL || MINGW_TOOLS.dlltool,
    strip: env.KVQ_MINGW_STRIP || MINGW_TOOLS.strip,
    objdump: env.KVQ_MINGW_OBJDUMP || MINGW_TOOLS.objdump,
  };
}

/** binding.gyp as data (gyp files are Python literals: `#` comments and trailing commas are removed first). */
export function readBindingGyp(file = join(pkgDir, 'binding.gyp')) {
  const text = readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => line.replace(/^\s*#.*$/, ''))
    .join('\n')
    .replace(/,(\s*[}\]])/g, '$1');
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new Error(`${file}: cannot read it as data for the MinGW build (${cause.message}); keep comments on their own lines`, { cause });
  }
}

/** Expands gyp's `<(var)`, `<@(list)` and `<!(command)` in one string or list item (commands run in pkgDir). */
function expand(item, vars) {
  const cmd = /^<!\((.*)\)$/s.exec(item);
  if (cmd) {
    const r = spawnSync(cmd[1], { shell: true, cwd: pkgDir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`binding.gyp command failed: ${cmd[1]}: ${r.stderr}`);
    return [r.stdout.trim().replace(/^"(.*)"$/, '$1')];
  }
  const list = /^<@\((\w+)\)$/.exec(item);
  if (list) {
    const v = vars[list[1]];
    if (!Array.isArray(v)) throw new Error(`binding.gyp: <@(${list[1]}) is not a list variable`);
    return v.flatMap((x) => expand(x, vars));
  }
  const one = /^<\((\w+)\)$/.exec(item);
  if (one) {
    const v = vars[one[1]];
    if (typeof v !== 'string') throw new Error(`binding.gyp: <(${one[1]}) is not a string variable`);
    return expand(v, vars);
  }
  return [item];
}

/** One binding.gyp target as the win32-x64 build sees it (conditions on target_arch=='x64' apply, OS ones do not). */
function targetFor(t, vars) {
  const parts = [t, ...(t.conditions ?? []).filter(([cond]) => /^\s*target_arch\s*==\s*'x64'\s*$/.test(cond)).map(([, then]) => then)];
  const all = (key) => parts.flatMap((p) => p[key] ?? []).flatMap((x) => expand(x, vars));
  const removed = new Set(all('cflags_cc!'));
  return {
    name: t.target_name,
    type: t.type ?? 'loadable_module',
    sources: all('sources'),
    // gyp resolves include dirs against the .gyp file's folder (node-addon-api's include_dir is relative to it).
    includes: all('include_dirs').map((d) => resolve(pkgDir, d)),
    defines: all('defines'),
    // -fPIC means nothing for PE; the visibility flags do (nothing is exported without dllexport).
    cflags: all('cflags_cc').filter((f) => !removed.has(f) && f !== '-fPIC'),
    dependencies: all('dependencies'),
  };
}

function run(cmd, argv, what) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error || r.status !== 0) throw new Error(`${what} failed (${r.error?.message ?? `exit ${r.status}`}): ${cmd} ${argv.join(' ')}\n${r.stderr}`);
  return r.stdout;
}

function compile(cxx, argv) {
  return new Promise((res, rej) => {
    const child = spawn(cxx, argv, { stdio: ['ignore', 'inherit', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('error', rej);
    child.on('close', (code) => (code === 0 ? res(err) : rej(new Error(`${cxx} ${argv.join(' ')} failed (exit ${code}):\n${err}`))));
  });
}

/** The DLL names a PE file imports (from objdump -p). */
export function peImports(file, tools = mingwTools()) {
  return [...run(tools.objdump, ['-p', file], 'objdump').matchAll(/DLL Name:\s*(\S+)/g)].map((m) => m[1]);
}

/**
 * Builds `<outDir>/kvq_cpu.node` for win32-x64 with MinGW-w64 and returns its path. Throws with the command's
 * output on any failure, and when the result imports a DLL that is not part of Windows or node.exe.
 * @param {{ outDir: string, jobs?: number, log?: (msg: string) => void, env?: NodeJS.ProcessEnv }} opts
 */
export async function mingwBuild({ outDir, jobs = 2, log = () => {}, env = process.env }) {
  const tools = mingwTools(env);
  for (const [name, tool] of Object.entries(tools)) {
    const probe = spawnSync(tool, ['--version'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) throw new Error(`MinGW-w64 ${name} ${tool} not found: ${MINGW_APT} (or set KVQ_MINGW_${name.toUpperCase()})`);
    if (name === 'cxx') log(`cross-compiling for win32-x64 with ${probe.stdout.split('\n')[0]}`);
  }
  const { units, def } = mingwPlan(join(outDir, 'obj'));
  mkdirSync(join(outDir, 'obj'), { recursive: true });
  // A small job pool: the ISA translation units take most of the time.
  const queue = [...units];
  const worker = async () => {
    for (let u = queue.shift(); u; u = queue.shift()) {
      log(`c++ ${u.src}`);
      const warnings = await compile(tools.cxx, u.argv);
      if (warnings.trim()) process.stderr.write(warnings);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker));

  const implib = join(outDir, 'libnode_api.a');
  run(tools.dlltool, ['-d', def, '-l', implib, '-D', 'node.exe'], 'dlltool (N-API import library)');
  const out = join(outDir, 'kvq_cpu.node');
  log(`link ${out}`);
  run(tools.cxx, ['-shared', '-o', out, ...units.map((u) => u.obj), implib, '-static', '-static-libgcc', '-static-libstdc++', '-Wl,--no-undefined'], 'link');

  const imports = peImports(out, tools);
  const foreign = imports.filter((d) => !ALLOWED_IMPORTS.test(d));
  if (foreign.length > 0) throw new Error(`${out} imports ${foreign.join(', ')}: only Windows DLLs and node.exe may be imported (link statically)`);
  log(`imports: ${imports.join(', ')}`);
  return out;
}

/**
 * What mingwBuild compiles, without compiling: one unit per source of the addon target and the static libraries
 * it depends on (`{ target, src, obj, argv }`, argv = the compiler arguments), and the N-API .def file.
 * @param {string} objDir where the object files go
 */
export function mingwPlan(objDir) {
  const req = createRequire(join(pkgDir, 'package.json'));
  let headers;
  try {
    headers = dirname(req.resolve('node-api-headers/package.json'));
  } catch (cause) {
    throw new Error(`node-api-headers is not installed (a devDependency of @kvq/kernels-cpu): ${cause}`, { cause });
  }
  const def = join(headers, 'def', 'node_api.def');
  if (!existsSync(def)) throw new Error(`${def} not found (node-api-headers without its .def files)`);

  const gyp = readBindingGyp();
  const vars = gyp.variables ?? {};
  const targets = gyp.targets.map((t) => targetFor(t, vars));
  const main = targets.find((t) => t.type === 'loadable_module');
  if (!main) throw new Error('binding.gyp has no loadable_module target');

  const common = ['-c', '-Wa,-muse-unaligned-vector-move', `-I${join(headers, 'include')}`];
  const units = [];
  for (const t of [...targets.filter((t) => main.dependencies.includes(t.name)), main]) {
    const defines = t === main ? [...t.defines, 'BUILDING_NODE_EXTENSION', `NODE_GYP_MODULE_NAME=${t.name}`] : t.defines;
    for (const src of t.sources) {
      const obj = join(objDir, `${t.name}-${basename(src).replace(/\.\w+$/, '.o')}`);
      const argv = [...t.cflags, ...common, ...t.includes.map((d) => `-I${d}`), ...defines.map((d) => `-D${d}`), join(pkgDir, src), '-o', obj];
      units.push({ target: t.name, src, obj, argv });
    }
  }
  return { units, def };
}
