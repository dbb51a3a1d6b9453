// SPDX-License-Identifier: Apache-2.0
// dependency-cruiser rules for the layering in the root README (`pnpm lint:boundaries`, run from the repository
// root); the layers are data in layers.cjs beside this file.
const { DIRS, ALLOWED, TEST_ONLY, TEST_FILE } = require('./layers.cjs');

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const names = Object.keys(DIRS);

/** `to.path` of any package in `forbidden`: its folder (resolved) or its bare name (unresolved). */
function toAny(forbidden) {
  const dirs = forbidden.map((n) => esc(DIRS[n]));
  const bare = forbidden.map((n) => esc(`@kvq/${n}`));
  return `^(${dirs.join('|')})/|^(${bare.join('|')})($|/)`;
}

function layerRules() {
  const rules = [];
  for (const name of names) {
    const own = DIRS[name];
    const runtime = new Set([name, ...ALLOWED[name]]);
    const inTests = new Set([...runtime, ...TEST_ONLY.all, ...(TEST_ONLY[name] ?? [])]);
    const notRuntime = names.filter((n) => !runtime.has(n));
    const notInTests = names.filter((n) => !inTests.has(n));
    if (notRuntime.length > 0) {
      rules.push({
        name: `layer-${name}`,
        severity: 'error',
        comment: `@kvq/${name} may import only ${[...ALLOWED[name]].map((n) => '@kvq/' + n).join(', ') || 'no workspace package'} (root README diagram)`,
        from: { path: `^${esc(own)}/`, pathNot: TEST_FILE },
        to: { path: toAny(notRuntime) },
      });
    }
    if (notInTests.length > 0) {
      rules.push({
        name: `layer-${name}-tests`,
        severity: 'error',
        comment: `tests of @kvq/${name} may import only its own layers plus the test-only packages`,
        from: { path: `^${esc(own)}/.*(${TEST_FILE})` },
        to: { path: toAny(notInTests) },
      });
    }
  }
  return rules;
}

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    ...layerRules(),
    {
      name: 'no-relative-cross-package',
      severity: 'error',
      comment: 'another package is imported by its name and exports map, never by a relative path into its folder',
      from: { path: '^(packages|apps|tooling)/([^/]+)/' },
      to: { path: '^(packages|apps|tooling)/', pathNot: '^(packages|apps|tooling)/$2/', dependencyTypes: ['local'] },
    },
    {
      name: 'no-deep-imports',
      severity: 'error',
      comment: 'no deep imports into a kvq package (src/, dist/): only what its exports map offers',
      from: {},
      to: { path: '^@kvq/[^/]+/(src|dist|build|csrc)(/|$)' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'an import that does not resolve (a typo, an undeclared dependency, or a path the exports map hides)',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'no import cycles between modules',
      from: {},
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only', 'dynamic-import'] } },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(node_modules|dist|build|coverage|\\.turbo)/' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['@kvq/source', 'import', 'types', 'node', 'default'],
      extensions: ['.ts', '.mts', '.js', '.mjs', '.cjs', '.json', '.d.ts'],
    },
    combinedDependencies: false,
    preserveSymlinks: false,
  },
};
