/**
 * Self-test of the CUDA simulator itself (csrc/sim/selftest.cc), warp 32 (NVIDIA) and warp 64 (AMD CDNA): compiles
 * the self-test with the host C++ compiler (`$CXX`, else `g++` / `c++`) into a temporary directory, runs it and
 * expects every case it prints (one JSON line each: `{"case", "ok", "detail"}`) to be ok. The cases check the model
 * (warp shuffles, __syncthreads, static and dynamic shared memory, 2-D/3-D blocks, atomics) and prove that each of
 * the simulator's checks fires (divergent __syncthreads vs shuffle, shuffles with exited or missing lanes, invalid
 * launch configurations, too much dynamic shared memory, sticky errors and recovery), so the kernel suite on the
 * simulator (sim.test.ts) cannot pass on checks that never trigger. Needs no Node headers or simulator addon. No C++
 * compiler skips with the reason, except in CI (`KVQ_REQUIRE_GPU_COMPILERS=1`), where it fails. A few seconds a width.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const required = process.env.KVQ_REQUIRE_GPU_COMPILERS === '1';
const pkgDir = fileURLToPath(new URL('..', import.meta.url));
const simDir = join(pkgDir, 'csrc', 'sim');
const WARPS = [32, 64] as const;

/** One line of the self-test's output. */
interface SelftestCase {
  readonly case: string;
  readonly ok: boolean;
  readonly detail: string;
}

function onPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, cmd))) return join(dir, cmd);
  }
  return undefined;
}

/** The C++ compiler to use: `$CXX` when set, else g++ or c++ on the PATH. */
function findCompiler(): string | undefined {
  const fromEnv = process.env.CXX?.trim();
  if (fromEnv) return fromEnv;
  return onPath('g++') ?? onPath('c++');
}

function parseLines(stdout: string): { cases: SelftestCase[]; garbage: string[] } {
  const cases: SelftestCase[] = [];
  const garbage: string[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.trim()) continue;
    try {
      const v: unknown = JSON.parse(line);
      if (
        typeof v === 'object' && v !== null &&
        typeof (v as SelftestCase).case === 'string' &&
        typeof (v as SelftestCase).ok === 'boolean' &&
        typeof (v as SelftestCase).detail === 'string'
      ) {
        cases.push(v as SelftestCase);
      } else {
        garbage.push(line);
      }
    } catch {
      garbage.push(line);
    }
  }
  return { cases, garbage };
}

const cxx = findCompiler();

const skipReason =
  process.platform !== 'linux'
    ? `the simulator is Linux only (this is ${process.platform})`
    : !cxx && !required
      ? 'no C++ compiler (g++ / c++; set CXX)'
      : undefined;

describe.skipIf(skipReason !== undefined)(`CUDA simulator self-test${skipReason ? `: ${skipReason}` : ''}`, () => {
  const workDir = mkdtempSync(join(tmpdir(), 'kvq-sim-selftest-'));
  afterAll(() => rmSync(workDir, { recursive: true, force: true }));

  it('a C++ compiler is available', () => {
    expect(cxx, 'no C++ compiler (g++ / c++ on PATH, or CXX), and KVQ_REQUIRE_GPU_COMPILERS=1').toBeDefined();
  });

  for (const warp of WARPS) {
    it(`warp ${warp}: every case of csrc/sim/selftest.cc passes`, () => {
      if (!cxx) throw new Error('no C++ compiler (g++ / c++ on PATH, or CXX), and KVQ_REQUIRE_GPU_COMPILERS=1');
      const exe = join(workDir, `selftest-w${warp}`);
      const build = spawnSync(
        cxx,
        [
          '-std=c++17', '-O1', '-DKVQ_SIM=1', `-DKVQ_SIM_WARP=${warp}`, '-Wno-unknown-pragmas',
          join(simDir, 'selftest.cc'), join(simDir, 'cuda_sim.cc'), '-o', exe,
        ],
        { encoding: 'utf8', timeout: 180_000 },
      );
      expect(
        build.error === undefined && build.status === 0,
        `compiling the self-test (warp ${warp}) with ${cxx} failed: ${build.error?.message ?? `exit ${String(build.status)}`}\n${build.stderr}`,
      ).toBe(true);

      const run = spawnSync(exe, [], { encoding: 'utf8', timeout: 120_000 });
      const { cases, garbage } = parseLines(run.stdout ?? '');
      const failed = cases.filter((c) => !c.ok);
      const how = run.error
        ? run.error.message
        : run.signal
          ? `killed by ${run.signal}`
          : `exit ${String(run.status)}`;
      const last = cases.at(-1)?.case;
      const context = `self-test (warp ${warp}) ${how}, ${last ? `after case ${last}` : 'before any case'}; stderr: ${run.stderr ?? ''}`;
      expect(garbage, `lines that are not case JSON; ${context}`).toEqual([]);
      for (const c of cases) expect(c.ok, `${c.case} (warp ${warp}): ${c.detail}`).toBe(true);
      expect(failed.map((c) => `${c.case}: ${c.detail}`), context).toEqual([]);
      expect(cases.length, `too few cases; ${context}`).toBeGreaterThanOrEqual(10);
      expect(new Set(cases.map((c) => c.case)).size, 'duplicate case names').toBe(cases.length);
      expect(run.status, context).toBe(0);
    }, 300_000);
  }
});
