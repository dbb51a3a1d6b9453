import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BenchPeerError } from './errors.js';
import type { Job, JobResult } from './protocol.js';

/** How measured children are scheduled. */
export type Realtime = 'auto' | 'chrt' | 'off';

/**
 * The built child entry (`dist/run.js`). From the built package it sits beside this module; from the sources
 * (tests, `@kvq/source`) it is `../dist/run.js`.
 * @throws BenchPeerError `NOT_BUILT` when it does not exist
 */
export function childScript(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const candidate of [join(here, 'run.js'), join(here, '..', 'dist', 'run.js')]) if (existsSync(candidate)) return candidate;
  throw new BenchPeerError('NOT_BUILT', `the measured child processes run the built harness, but ${join(here, '..', 'dist', 'run.js')} does not exist: run \`pnpm --filter @kvq/bench-peer... build\` first`);
}

/** Whether `chrt -r 1` can be used here (Linux, root or CAP_SYS_NICE, chrt on PATH): tried once on `true`. */
export function realtimeAvailable(): boolean {
  if (process.platform !== 'linux') return false;
  const r = spawnSync('chrt', ['-r', '1', 'true'], { stdio: 'ignore' });
  return r.status === 0;
}

/**
 * Decide the scheduling of measured children: `chrt` requires real-time (SCHED_RR priority 1), `off` never uses it,
 * `auto` uses it when available.
 * @throws BenchPeerError `INVALID_ARGUMENT` when `chrt` is asked for but not available
 */
export function resolveRealtime(mode: Realtime): boolean {
  if (mode === 'off') return false;
  const ok = realtimeAvailable();
  if (mode === 'chrt' && !ok) {
    throw new BenchPeerError('INVALID_ARGUMENT', "realtime 'chrt' needs `chrt -r 1` to work (Linux, util-linux's chrt, root or CAP_SYS_NICE); use 'off' on an idle machine", { field: 'realtime' });
  }
  return ok;
}

/**
 * Run one job in a child process (`chrt -r 1 node dist/run.js --child job.json --out result.json` when
 * `realtime`), with `KVQ_CPU_THREADS=threads`, and read its result.
 * @throws BenchPeerError `CHILD_FAILED` (exit code, timeout, or no result; stderr tail in the message)
 */
export async function runChild<R extends JobResult>(job: Job, options: ChildOptions): Promise<R> {
  // The children import the workspace packages' built dist folders, which a concurrent `turbo build` (tsup cleans
  // its output first) can remove for a few seconds: wait for it to come back instead of losing the measurement.
  const retries = options.moduleRetries ?? 20;
  for (let attempt = 0; ; attempt++) {
    try {
      return await runChildOnce<R>(job, options);
    } catch (e) {
      if (!(e instanceof BenchPeerError) || !/ERR_MODULE_NOT_FOUND|Cannot find module/.test(e.message) || attempt >= retries) throw e;
      options.log?.(`${options.name}: a workspace package's dist is missing (being rebuilt?); retrying in 15 s`);
      await new Promise((r) => setTimeout(r, 15_000));
    }
  }
}

/** Options of {@link runChild}. */
export interface ChildOptions {
  /** Folder for the job and result files. */
  readonly dir: string;
  /** Run under `chrt -r 1`. */
  readonly realtime: boolean;
  /** `KVQ_CPU_THREADS` of the child. */
  readonly threads: number;
  readonly timeoutMs: number;
  /** File-name stem and label in messages. */
  readonly name: string;
  /** Retries when the child cannot import a workspace package (15 s apart). Default 20. */
  readonly moduleRetries?: number;
  readonly log?: (line: string) => void;
}

async function runChildOnce<R extends JobResult>(job: Job, options: ChildOptions): Promise<R> {
  const jobFile = join(options.dir, `${options.name}.job.json`);
  const outFile = join(options.dir, `${options.name}.result.json`);
  await writeFile(jobFile, JSON.stringify(job));
  await rm(outFile, { force: true });
  const node = [process.execPath, childScript(), '--child', jobFile, '--out', outFile];
  const [cmd, ...args] = options.realtime ? ['chrt', '-r', '1', ...node] : node;
  const stderr: string[] = [];
  let timedOut = false;
  const code = await new Promise<number | string>((resolve, reject) => {
    const child = spawn(cmd!, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, KVQ_CPU_THREADS: String(options.threads), NODE_OPTIONS: '' },
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.stderr.on('data', (b: Buffer) => {
      stderr.push(b.toString());
      if (stderr.length > 200) stderr.splice(0, 100);
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (c, signal) => {
      clearTimeout(timer);
      resolve(c ?? signal ?? 'unknown');
    });
  }).catch((cause: unknown) => {
    throw new BenchPeerError('CHILD_FAILED', `${options.name}: could not start ${cmd}: ${(cause as Error).message}`, { cause });
  });
  const tail = stderr.join('').slice(-3000);
  if (timedOut) throw new BenchPeerError('CHILD_FAILED', `${options.name}: timed out after ${options.timeoutMs} ms\n${tail}`);
  if (code !== 0) throw new BenchPeerError('CHILD_FAILED', `${options.name}: exited with ${code}\n${tail}`);
  try {
    const result = JSON.parse(await readFile(outFile, 'utf8')) as R;
    await rm(jobFile, { force: true });
    return result;
  } catch (cause) {
    throw new BenchPeerError('CHILD_FAILED', `${options.name}: no readable result in ${outFile}\n${tail}`, { file: outFile, cause });
  }
}
