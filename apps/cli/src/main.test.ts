import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { main } from './main.js';

function capture() {
  let out = '';
  let err = '';
  return {
    io: { stdout: { write: (t: string) => (out += t) }, stderr: { write: (t: string) => (err += t) } },
    out: () => out,
    err: () => err,
  };
}

describe('kvq main', () => {
  it('prints help with every command and exits 0', async () => {
    const c = capture();
    expect(await main([], c.io)).toBe(0);
    expect(c.out()).toMatch(/Commands:[\s\S]*fp8/);
  });
  it('unknown command is a usage error (exit 2)', async () => {
    const c = capture();
    expect(await main(['frobnicate'], c.io)).toBe(2);
    expect(c.err()).toMatch(/unknown command "frobnicate"/);
  });
  it('fp8 encodes with a scale, as JSON', async () => {
    const c = capture();
    expect(await main(['fp8', '--format', 'e4m3fn', '--scale', '2', '--json', '896', '1000', 'nan'], c.io)).toBe(0);
    const r = JSON.parse(c.out()) as { results: { code: number; decoded: number | null }[] };
    expect(r.results.map((x) => x.code)).toEqual([0x7e, 0x7e, 0x7f]);
    expect(r.results[0]!.decoded).toBe(896);
  });
  it('fp8 rejects bad input with exit 2', async () => {
    for (const argv of [['fp8'], ['fp8', 'abc'], ['fp8', '--scale', '0', '1'], ['fp8', '--format', 'e3m4', '1'], ['fp8', '--bogus']]) {
      const c = capture();
      expect(await main(argv, c.io), argv.join(' ')).toBe(2);
      expect(c.err()).toMatch(/^kvq: /);
    }
  });
});

const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'bin.js');
describe.skipIf(!existsSync(bin))('built kvq binary', () => {
  it('runs and exits with the documented codes', () => {
    expect(execFileSync(process.execPath, [bin, 'fp8', '1.5'], { encoding: 'utf8' })).toMatch(/e4m3fn\s+0x3c/);
    expect(spawnSync(process.execPath, [bin, 'nope']).status).toBe(2);
  });
});
