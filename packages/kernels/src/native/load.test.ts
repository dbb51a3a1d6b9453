import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { notLoadedReason, tryLoadNative } from './load.js';
import { envInt, scaleRuns } from './ops.js';

const dir = mkdtempSync(join(tmpdir(), 'kvq-native-load-'));
/** A CommonJS module standing in for an addon. */
function fake(name: string, body: string): string {
  const p = join(dir, `${name}.cjs`);
  writeFileSync(p, body);
  return p;
}
const req = createRequire(import.meta.url);

describe('tryLoadNative', () => {
  it('walks the candidates, records why each failed, and loads the first good one', () => {
    const stale = fake('stale', 'module.exports = { abi: 1, vendor: "x" };');
    const throws = fake('throws', 'throw new Error("dlopen failed: libfoo.so\\nsecond line");');
    const wrongVendor = fake('vendor', 'module.exports = { abi: 7, vendor: "hip" };');
    const good = fake('good', 'module.exports = { abi: 7, vendor: "cuda" };');
    const r = tryLoadNative<{ abi: number; vendor: string }>(
      [
        join(dir, 'absent.node'),
        { path: 'pkg/addon.node', origin: 'platform package', unavailable: 'package pkg is not installed' },
        stale,
        throws,
        wrongVendor,
        { path: good, origin: 'local build' },
      ],
      { abi: 7, accept: (a) => (a.vendor === 'cuda' ? undefined : `built for ${a.vendor}`), hint: 'build it', requireFn: req },
    );
    expect(r.ok).toBe(true);
    if (r.ok) {
      expect(r.path).toBe(good);
      expect(r.origin).toBe('local build');
      expect(r.addon.vendor).toBe('cuda');
    }
  });

  it('fails with every candidate and the hint in the reason, never throwing', () => {
    const stale = fake('stale2', 'module.exports = { abi: 1 };');
    const throws = fake('throws2', 'throw new Error("dlopen failed: libfoo.so\\nsecond line");');
    const r = tryLoadNative([join(dir, 'absent.node'), { path: stale, origin: 'env' }, throws], { abi: 2, hint: 'Build it with X.', requireFn: req });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.tried.map((t) => t.error)).toEqual(['not found', 'stale or foreign build: ABI 1, this package needs 2', 'dlopen failed: libfoo.so']);
    expect(r.tried[1]!.origin).toBe('env');
    expect(r.cause).toBeInstanceOf(Error);
    expect(r.reason).toBe(notLoadedReason(r.tried, 'Build it with X.'));
    expect(r.reason).toMatch(/^no usable native addon \[.*absent\.node \(not found\); env .*stale2\.cjs \(stale or foreign build.*\)\]\. Build it with X\.$/);
  });
});

describe('scaleRuns and envInt', () => {
  it('maps each scale layout to the native (runLength, period)', () => {
    expect(scaleRuns({ granularity: 'tensor' }, 10)).toEqual([10, 1]);
    expect(scaleRuns({ granularity: 'tensor' }, 0)).toEqual([1, 1]);
    expect(scaleRuns({ granularity: 'head', numHeads: 4, headSize: 8 }, 64)).toEqual([8, 4]);
    expect(scaleRuns({ granularity: 'token', tokenSize: 32 }, 64)).toEqual([32, 0]);
    expect(scaleRuns({ granularity: 'token_head', numHeads: 4, headSize: 8 }, 64)).toEqual([8, 0]);
  });

  it('reads integer variables and names a bad one', () => {
    expect(envInt('N', 1, {})).toBeUndefined();
    expect(envInt('N', 1, { N: '' })).toBeUndefined();
    expect(envInt('N', 1, { N: '4' })).toBe(4);
    expect(() => envInt('N', 1, { N: '0' })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'N' }));
    expect(() => envInt('N', 1, { N: 'two' })).toThrow(/N must be an integer >= 1, got "two"/);
  });
});
