/**
 * The native draw (csrc/sample_draw.h) against `sampleDrawReference`: the same token for every uniform draw, over
 * vocabulary sizes on both sides of the small-set path (1024 candidates), flat, peaked and tied logits (ties make the
 * quickselect's order matter), NaN and infinities, temperatures, top-p (including the cut's first and last buckets),
 * top-k and min weights, on one and three threads and every ISA this machine runs; no candidate gives -1; bad arguments
 * are typed errors.
 */
import { KernelError, sampleDrawReference, type SampleDrawArgs } from '@kvq/kernels';
import { rng } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend } from './backend.js';

const avail = cpuAvailability();

describe.skipIf(!avail.available)('sampleDraw: native vs reference', () => {
  const b = avail.available ? createBackend({ threads: 1 }) : undefined;
  const backends = avail.available ? [b!, createBackend({ threads: 3 }), ...avail.cpu.isas.filter((isa) => isa !== b!.isa).map((isa) => createBackend({ threads: 2, isa }))] : [];

  const rnd = rng(17);
  const rows: { name: string; logits: Float32Array }[] = [];
  for (const n of [7, 900, 5000, 32000, 128256]) {
    rows.push({ name: `flat ${n}`, logits: Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * 8) });
    rows.push({ name: `peaked ${n}`, logits: Float32Array.from({ length: n }, (_, i) => -1.5 * Math.log(1 + ((i * 2654435761) % n))) });
    // Quarter-nat steps: hundreds of equal weights per bucket, so the walk's id order among ties decides.
    rows.push({ name: `tied ${n}`, logits: Float32Array.from({ length: n }, () => Math.round((rnd() * 2 - 1) * 24) / 4) });
  }
  rows.push({ name: 'NaN, -Infinity, ties', logits: Float32Array.from({ length: 3000 }, (_, i) => (i % 97 === 0 ? NaN : i % 101 === 0 ? -Infinity : i % 7 === 0 ? 2.5 : Math.sin(i) * 6)) });
  const params: Omit<SampleDrawArgs, 'logits' | 'u' | 'pruneNats'>[] = [
    { temperature: 1 },
    { temperature: 0.8, topP: 0.95 },
    { temperature: 0.7, topP: 0.5, topK: 50 },
    { temperature: 1.3, topP: 0.9, topK: 2000 },
    { temperature: 0.6, topP: 0.9, minWeight: 0.05 },
    { temperature: 0.3, topP: 1e-9 },
    { temperature: 2, topP: 0.999 },
  ];

  it.each(rows)('$name: the same token for every draw and setting', ({ logits }) => {
    const pruneNats = Math.log(logits.length) + 28;
    let checked = 0;
    for (const p of params) {
      for (let d = 0; d < 24; d++) {
        const u = d === 0 ? 0 : d === 1 ? 1 - 2 ** -53 : rnd();
        const args: SampleDrawArgs = { logits, pruneNats, u, ...p };
        const want = sampleDrawReference(args);
        expect(want).toBeGreaterThanOrEqual(0);
        for (const backend of backends) expect(backend.sampleDraw!(args), `${backend.info.simd} ${JSON.stringify(p)} u=${u}`).toBe(want);
        checked++;
      }
    }
    expect(checked).toBe(params.length * 24);
  });

  it('no candidate (every logit -Infinity or NaN): -1, as the reference', () => {
    const logits = Float32Array.from({ length: 2000 }, (_, i) => (i % 2 ? NaN : -Infinity));
    const args: SampleDrawArgs = { logits, temperature: 1, topP: 0.9, pruneNats: Infinity, u: 0.5 };
    expect(sampleDrawReference(args)).toBe(-1);
    for (const backend of backends) expect(backend.sampleDraw!(args)).toBe(-1);
  });

  it('refuses bad arguments with typed errors naming them', () => {
    const base: SampleDrawArgs = { logits: new Float32Array(8), temperature: 1, pruneNats: Infinity, u: 0.5 };
    for (const [bad, arg] of [
      [{ temperature: 0 }, 'temperature'],
      [{ pruneNats: -1 }, 'pruneNats'],
      [{ topK: 2.5 }, 'topK'],
      [{ topP: 0 }, 'topP'],
      [{ topP: 1.5 }, 'topP'],
      [{ minWeight: 2 }, 'minWeight'],
      [{ u: 1 }, 'u'],
      [{ u: -0.1 }, 'u'],
      [{ u: NaN }, 'u'],
      [{ logits: new Float64Array(8) }, 'logits'],
    ] as const) {
      for (const draw of [(a: SampleDrawArgs) => b!.sampleDraw!(a), sampleDrawReference]) {
        let err: unknown;
        try {
          draw({ ...base, ...(bad as object) } as SampleDrawArgs);
        } catch (e) {
          err = e;
        }
        expect(err, arg).toBeInstanceOf(KernelError);
        expect((err as KernelError).argument).toBe(arg);
      }
    }
  });
});
