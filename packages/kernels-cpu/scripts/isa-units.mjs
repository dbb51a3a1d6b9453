// SPDX-License-Identifier: Apache-2.0
//
// The rule that makes run-time ISA dispatch safe: a translation unit compiled with ISA flags (kernels_avx2.cc,
// kernels_avx512.cc, kernels_neon.cc, kernels_neon_dotprod.cc) may export nothing but its table function
// (kvq::kernels_<isa>()). Any other global symbol (a non-static inline function, a template instantiated outside the
// ISA namespace, a std:: helper) is a COMDAT the linker may pick for the baseline code as well, and then the
// binary dies with SIGILL on a CPU without that ISA. checkIsaUnits() reads each ISA object's defined global symbols
// with nm and reports every other one.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, join } from 'node:path';

/** Object files of the ISA-flagged units, by the name their build gives them (gyp: kernels_avx2.o; MinGW: <target>-kernels_avx2.o). */
const ISA_OBJECT = /(?:^|-)kernels_(avx2|avx512|neon|neon_dotprod)\.o$/;
/** What an ISA unit may export: its table function (the avx512 unit also holds the amx table). */
const ALLOWED = /^kvq::kernels_(avx2|avx512|amx|neon|neon_dotprod)\(\)$/;

/** Every file under `dir` (recursively) whose name matches ISA_OBJECT. */
function isaObjects(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...isaObjects(p));
    else if (ISA_OBJECT.test(e.name)) out.push(p);
  }
  return out;
}

/**
 * Checks the ISA objects under `buildDir` with `nm` (the target's: e.g. aarch64-linux-gnu-nm).
 * @param {string} buildDir  the build's output folder (searched recursively for the ISA objects)
 * @param {string} nm        the nm command for the target's object format
 * @returns {{ checked: string[], problems: string[] }}  the objects read, and one line per stray symbol or nm failure
 */
export function checkIsaUnits(buildDir, nm) {
  const checked = isaObjects(buildDir);
  const problems = [];
  for (const obj of checked) {
    const r = spawnSync(nm, ['-g', '--defined-only', '-C', obj], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.error || r.status !== 0) {
      problems.push(`${nm} ${basename(obj)} failed: ${r.error?.message ?? r.stderr.trim()}`);
      continue;
    }
    for (const line of r.stdout.split('\n')) {
      const m = /^[0-9a-fA-F]*\s+[A-Za-z]\s+(.+)$/.exec(line.trim());
      if (m && !ALLOWED.test(m[1])) problems.push(`${basename(obj)} exports ${m[1]}`);
    }
  }
  return { checked, problems };
}
