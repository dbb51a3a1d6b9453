/**
 * Test helper: a real `redis-server` (Debian package `redis-server`; Valkey's `valkey-server` works too) on a free
 * loopback port, without persistence (`--save '' --appendonly no`), for the tests of the Redis tier and of replicas
 * sharing it. Not for production use.
 * @module
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';

/** The server binary found on PATH (`redis-server`, then `valkey-server`), or undefined. */
export function redisServerBinary(): string | undefined {
  for (const bin of ['redis-server', 'valkey-server']) {
    const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return bin;
  }
  return undefined;
}

/**
 * Whether Redis tests must run: true when a server binary is on PATH, or when `CI` / `KVQ_REQUIRE_REDIS` is set (then a
 * missing binary fails the tests instead of skipping them; `.ci/run` installs the Debian package).
 */
export function redisTestsEnabled(): boolean {
  return redisServerBinary() !== undefined || process.env.CI === 'true' || process.env.KVQ_REQUIRE_REDIS === '1';
}

/** A free TCP port on 127.0.0.1 (bound, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** A running test server. */
export interface TestRedisServer {
  /** `redis://127.0.0.1:PORT/0`. */
  readonly url: string;
  readonly port: number;
  /** An admin connection (CONFIG SET, DEBUG SLEEP, planting values); closed by {@link stop}. */
  readonly admin: Redis;
  /** The server process. */
  readonly process: ChildProcess;
  /** SIGKILL the server (a crash); resolves when it has exited. */
  kill(): Promise<void>;
  /** Start the server again on the same port (after {@link kill}), empty. */
  restart(): Promise<void>;
  /** Stop the server and remove its folder. Idempotent. */
  stop(): Promise<void>;
}

/** Extra `redis-server` arguments, e.g. `['--maxmemory', '1mb', '--maxmemory-policy', 'noeviction']`. */
export async function startRedisServer(extraArgs: readonly string[] = []): Promise<TestRedisServer> {
  const bin = redisServerBinary();
  if (bin === undefined) {
    throw new Error('redis-server is not installed (Debian: apt-get install redis-server); .ci/run installs it, and without CI=true the Redis tests are skipped');
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'kvq-redis-'));
  let proc: ChildProcess;
  const launch = async (): Promise<ChildProcess> => {
    const p = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no', ...extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start on port ${port} in 10 s:\n${out}`)), 10_000);
      const onData = (d: Buffer) => {
        out += d.toString();
        if (/Ready to accept connections/i.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      };
      p.stdout!.on('data', onData);
      p.stderr!.on('data', onData);
      p.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code} before it was ready:\n${out}`));
      });
    });
    p.stdout!.resume();
    p.stderr!.resume();
    return p;
  };
  proc = await launch();
  const admin = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, retryStrategy: (t: number) => Math.min(50 * t, 500) });
  admin.on('error', () => {});
  await admin.ping();
  let stopped = false;
  const exited = (p: ChildProcess) => (p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => p.once('exit', () => r())));
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    admin,
    get process() {
      return proc;
    },
    async kill() {
      proc.kill('SIGKILL');
      await exited(proc);
    },
    async restart() {
      proc = await launch();
      // The admin connection reconnects in the background: wait until it answers again.
      for (let i = 0; ; i++) {
        try {
          await admin.ping();
          return;
        } catch (error) {
          if (i >= 100) throw error;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      admin.disconnect();
      proc.kill('SIGKILL');
      await exited(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
