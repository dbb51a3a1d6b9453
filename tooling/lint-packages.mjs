#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// `pnpm lint:packages`: checks every public (non-private) workspace package as npm users will get it. Builds the
// packages (with declarations), packs each with pnpm (so `workspace:` and `catalog:` versions are replaced as on
// publish), and runs on the tarball:
//   - publint (`publint run <tgz> --strict`: warnings fail too): exports map, files, types, paths that exist;
//   - attw (@arethetypeswrong/cli) with `--profile esm-only`: every kvq package is ESM only ("type": "module",
//     `import` conditions, no `require`), so CommonJS resolution (node10, node16 from CJS) is out of scope by design;
//     the profile still fails on any problem for ESM consumers under node16/nodenext and bundler resolution.
// Platform packages (@kvq/kernels-cpu-<triple>) carry only a prebuilt kvq_cpu.node and no JavaScript: publint
// checks them when their binary has been built (scripts/prebuild.mjs of @kvq/kernels-cpu), attw does not apply.
//
//   node tooling/lint-packages.mjs [--no-build] [name ...]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));
const argv = process.argv.slice(2);
const only = argv.filter((a) => !a.startsWith('--'));

/** Every workspace package that is published. */
function publicPackages() {
  const out = [];
  for (const group of ['packages', 'packages/kernels-cpu/npm', 'apps', 'tooling']) {
    const base = join(root, group);
    if (!existsSync(base)) continue;
    for (const d of readdirSync(base, { withFileTypes: true })) {
      const pj = join(base, d.name, 'package.json');
      if (!d.isDirectory() || !existsSync(pj)) continue;
      const pkg = JSON.parse(readFileSync(pj, 'utf8'));
      if (pkg.private === true) continue;
      if (only.length > 0 && !only.includes(pkg.name)) continue;
      out.push({ name: pkg.name, dir: join(base, d.name), pkg });
    }
  }
  return out;
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', ...options });
  return { status: r.status ?? 1, output: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

/**
 * The pnpm running this script (npm_execpath: a JavaScript entry, or pnpm 11+'s single executable, which is run
 * directly), else the root's `packageManager` pnpm through npx.
 */
function pnpm(args, cwd) {
  const exec = process.env.npm_execpath;
  if (exec && /pnpm/.test(exec)) {
    return /\.[cm]?js$/.test(exec) ? run(process.execPath, [exec, ...args], { cwd }) : run(exec, args, { cwd });
  }
  const pm = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).packageManager ?? 'pnpm';
  return run('npx', ['-y', pm, ...args], { cwd });
}

const packages = publicPackages();
if (packages.length === 0) {
  process.stderr.write(`lint:packages: no public package matches ${only.join(', ')}\n`);
  process.exit(2);
}
const isPlatform = (p) => !p.pkg.exports?.['.'] && Object.keys(p.pkg.exports ?? {}).some((k) => k.endsWith('.node'));

if (!argv.includes('--no-build')) {
  const buildable = packages.filter((p) => p.pkg.scripts?.build);
  const turbo = require.resolve('turbo/bin/turbo');
  const b = spawnSync(process.execPath, [turbo, 'run', 'build', ...buildable.map((p) => `--filter=${p.name}`), '--output-logs=errors-only'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, KVQ_BUILD_DTS: '1' },
  });
  if (b.status !== 0) process.exit(b.status ?? 1);
}

/** The JavaScript file of an installed package's `bin` (found through node_modules, whatever its exports allow). */
function binOf(name, bin) {
  for (const base of require.resolve.paths(name) ?? []) {
    const pj = join(base, name, 'package.json');
    if (!existsSync(pj)) continue;
    const pkg = JSON.parse(readFileSync(pj, 'utf8'));
    const rel = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin?.[bin];
    if (rel) return join(base, name, rel);
  }
  process.stderr.write(`lint:packages: ${name} is not installed (a root devDependency): run pnpm install\n`);
  process.exit(2);
}
const publint = binOf('publint', 'publint');
const attw = binOf('@arethetypeswrong/cli', 'attw');
const tmp = mkdtempSync(join(tmpdir(), 'kvq-lint-packages-'));
const failures = [];
try {
  for (const p of packages) {
    if (isPlatform(p) && !existsSync(join(p.dir, 'kvq_cpu.node'))) {
      process.stdout.write(`- ${p.name}: skipped (kvq_cpu.node not built here; @kvq/kernels-cpu scripts/prebuild.mjs makes it)\n`);
      continue;
    }
    const dest = join(tmp, p.name.replace(/[@/]/g, '_'));
    const packed = pnpm(['pack', '--pack-destination', dest], p.dir);
    const tgz = existsSync(dest) ? readdirSync(dest).find((f) => f.endsWith('.tgz')) : undefined;
    if (packed.status !== 0 || !tgz) {
      failures.push(`${p.name}: pnpm pack failed:\n${packed.output.trim()}`);
      continue;
    }
    const file = join(dest, tgz);
    const checks = [['publint', run(process.execPath, [publint, 'run', file, '--strict'])]];
    if (!isPlatform(p)) checks.push(['attw', run(process.execPath, [attw, file, '--profile', 'esm-only', '--format', 'ascii', '--no-color'])]);
    for (const [tool, r] of checks) {
      // attw exits 0 for a package without any type declarations; for a TypeScript library that is a failure.
      const ok = r.status === 0 && !(tool === 'attw' && /does not contain types/.test(r.output));
      process.stdout.write(`${ok ? '✓' : '✗'} ${p.name}: ${tool}${ok ? '' : ` (exit ${r.status})`}\n`);
      if (!ok) failures.push(`${p.name}: ${tool}:\n${r.output.trim()}`);
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
if (failures.length > 0) {
  process.stderr.write(`\nlint:packages: ${failures.length} problem(s)\n\n${failures.join('\n\n')}\n`);
  process.exit(1);
}
process.stdout.write(`lint:packages: ${packages.length} public package(s) clean (publint --strict, attw --profile esm-only)\n`);
