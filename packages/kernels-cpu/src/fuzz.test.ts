/**
 * Fuzzing: random argument shapes, kinds and values for every op.
 * 1. Through the facade, against the reference backend: both must throw the same KernelError (code + argument)
 *    or both succeed with matching outputs.
 * 2. Straight into the native addon (bypassing the TypeScript validation): junk positional arguments must give a
 *    thrown Error carrying a `code`, or a normal return; never a crash (a crash kills this test's worker).
 */
import { createReferenceBackend, KERNEL_OPS, type KernelBackend, type KernelOpName } from '@kvq/kernels';
import { DEFAULT_TOLERANCES, compareOutput, makeKvCache, type ParityValue } from '@kvq/kernels/testing';
import { buildRopeTable } from '@kvq/kernels';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { NativeContext } from './addon-types.js';
import { cpuAvailability, createBackend } from './backend.js';
import { loadAddon } from './load.js';

const avail = cpuAvailability();
const reference = createReferenceBackend();

type Rand = () => number;

/** Outcome of one call: the error's identity, or the outputs. */
type Outcome = { threw: string } | { outputs: Record<string, ParityValue> };

function run(b: KernelBackend, call: (b: KernelBackend) => Record<string, ParityValue>): Outcome {
  try {
    return { outputs: call(b) };
  } catch (e) {
    const err = e as { name?: string; code?: string; argument?: string; message?: string };
    if (err.name !== 'KernelError') return { threw: `NOT A KernelError: ${String(err.name)} ${String(err.message)}` };
    return { threw: `${err.code} ${err.argument}` };
  }
}

// ---- random argument builders -------------------------------------------------------------------

const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
/** Usually `good`, sometimes a bad count. */
const count = (r: Rand, good: number): number => (r() < 0.9 ? good : pick(r, [-1, 0, 1.5, NaN, good + 1, 2 ** 31]));
/** A float array of about `n` elements, usually a Float32Array of exactly n (or longer), sometimes wrong. */
function f32(r: Rand, n: number): Float32Array {
  const len = r() < 0.9 ? n + (r() < 0.3 ? 2 : 0) : Math.max(0, n - 1);
  const a = new Float32Array(len);
  for (let i = 0; i < len; i++) a[i] = (r() - 0.5) * 4;
  return r() < 0.97 ? a : (new Float64Array(len) as unknown as Float32Array);
}
function i32(r: Rand, n: number, max: number): Int32Array {
  const a = new Int32Array(r() < 0.93 ? n : Math.max(0, n - 1));
  for (let i = 0; i < a.length; i++) a[i] = r() < 0.97 ? Math.floor(r() * max) : pick(r, [-1, max, 2 ** 30]);
  return r() < 0.98 ? a : (Uint32Array.from(a) as unknown as Int32Array);
}
function scales(r: Rand, n: number): Float32Array {
  const s = new Float32Array(r() < 0.92 ? n : pick(r, [0, n + 1, 3]));
  for (let i = 0; i < s.length; i++) s[i] = r() < 0.97 ? 0.001 + r() * 0.05 : pick(r, [0, -1, NaN, Infinity]);
  return s;
}
const FP8 = ['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'] as const;
const KV = ['f32', 'bf16', 'f16', ...FP8] as const;

function weight(r: Rand, rows: number, cols: number): never {
  const dtype = r() < 0.97 ? pick(r, ['f32', 'bf16', 'f16'] as const) : ('f64' as 'f32');
  const n = rows * cols + (r() < 0.05 ? 1 : 0);
  const data = dtype === 'f32' ? f32(r, n) : new Uint16Array(n).map(() => 0x3c00 + Math.floor(r() * 0x800));
  return { dtype, data: r() < 0.97 ? data : new Float32Array(n), rows: count(r, rows), cols } as never;
}

function cache(r: Rand, numBlocks: number, blockSize: number, numKvHeads: number, headSize: number, numHeads: number): never {
  const dtype = r() < 0.97 ? pick(r, KV) : 'fp9';
  const c = makeKvCache({ dtype: dtype === 'fp9' ? 'e4m3fn' : dtype, numBlocks, blockSize, numKvHeads, headSize, numHeads, scales: r() < 0.5 ? 'tensor' : 'head' });
  for (const pool of [c.key, c.value]) for (let i = 0; i < pool.length; i++) pool[i] = c.dtype === 'f32' ? r() - 0.5 : Math.floor(r() * (c.dtype.startsWith('e') ? 256 : 0x4000));
  const kScale = r() < 0.95 ? c.kScale : scales(r, c.kScale.length);
  const value = r() < 0.97 ? c.value : c.value.subarray(1);
  return { ...c, dtype, kScale, value } as never;
}

/** A random call of `op` (same inputs each time it is invoked, because it rebuilds them from `seed`). */
function randomCall(op: KernelOpName, seed: number): (b: KernelBackend) => Record<string, ParityValue> {
  return (b): Record<string, ParityValue> => {
    const r = mulberry(seed);
    const d = () => 1 + Math.floor(r() * 9);
    switch (op) {
      case 'linear': {
        const rows = d(), inF = d() * 3, outF = d() * 2;
        const out = new Float32Array(rows * outF);
        b.linear({ x: f32(r, rows * inF), weight: weight(r, outF, inF), out, rows: count(r, rows), bias: r() < 0.5 ? f32(r, outF) : undefined });
        return { out };
      }
      case 'rmsNorm': {
        const rows = d(), hidden = d() * 5;
        const out = new Float32Array(rows * hidden);
        b.rmsNorm({ x: f32(r, rows * hidden), weight: f32(r, hidden), out, rows: count(r, rows), hidden, eps: r() < 0.95 ? 1e-5 : pick(r, [NaN, -1]) });
        return { out };
      }
      case 'add':
      case 'siluAndMul':
      case 'geluTanhAndMul': {
        const n = Math.floor(r() * 100);
        const out = new Float32Array(n);
        if (op === 'add') b.add({ a: f32(r, n), b: f32(r, n), out, length: count(r, n) });
        else b[op]({ gate: f32(r, n), up: f32(r, n), out, length: count(r, n) });
        return { out };
      }
      case 'embedding': {
        const vocab = d() * 3, numTokens = d(), hidden = d() * 4;
        const out = new Float32Array(numTokens * hidden);
        b.embedding({ table: weight(r, vocab, hidden), ids: i32(r, numTokens, vocab), out, numTokens: count(r, numTokens) });
        return { out };
      }
      case 'rope': {
        const numTokens = d(), numKvHeads = d(), numHeads = numKvHeads * d(), headSize = 2 * d();
        const rotaryDim = Math.min(headSize, 2 * d());
        const table = buildRopeTable({ rotaryDim, theta: 10000, maxPositions: 40 });
        const query = f32(r, numTokens * numHeads * headSize);
        const key = f32(r, numTokens * numKvHeads * headSize);
        b.rope({ query, key, positions: i32(r, numTokens, 40), numTokens: count(r, numTokens), numHeads, numKvHeads, headSize, table, style: r() < 0.97 ? pick(r, ['rotate_half', 'interleaved'] as const) : ('neox' as never) });
        return { query, key };
      }
      case 'softmax': {
        const rows = d(), cols = d() * 7;
        const out = new Float32Array(rows * cols);
        b.softmax({ x: f32(r, rows * cols), out, rows, cols: count(r, cols) });
        return { out };
      }
      case 'argmax': {
        const rows = d(), cols = d() * 7;
        const out = new Int32Array(rows);
        b.argmax({ x: f32(r, rows * cols), out, rows, cols: count(r, cols) });
        return { out };
      }
      case 'reshapeAndCache': {
        const numBlocks = d(), blockSize = pick(r, [1, 4, 16]), numKvHeads = d(), headSize = d() * 2, numTokens = d();
        const c = cache(r, numBlocks, blockSize, numKvHeads, headSize, numKvHeads) as { key: ParityValue; value: ParityValue };
        const n = numTokens * numKvHeads * headSize;
        b.reshapeAndCache({ key: f32(r, n), value: f32(r, n), slotMapping: i32(r, numTokens, numBlocks * blockSize + 1), numTokens: count(r, numTokens), cache: c as never });
        return { key: c.key, value: c.value };
      }
      case 'pagedAttention': {
        const blockSize = pick(r, [1, 4, 16]), numKvHeads = d() % 3 || 1, numHeads = numKvHeads * pick(r, [1, 2, 4]);
        const headSize = pick(r, [8, 16, 64, 5]);
        const numSeqs = 1 + Math.floor(r() * 3);
        const seqLens = new Int32Array(numSeqs), qsl = new Int32Array(numSeqs + 1);
        for (let s = 0; s < numSeqs; s++) {
          seqLens[s] = 1 + Math.floor(r() * 40);
          qsl[s + 1] = qsl[s]! + 1 + Math.floor(r() * Math.min(5, seqLens[s]!));
        }
        if (r() < 0.05) seqLens[0] = 0;
        const maxBlocksPerSeq = Math.ceil(40 / blockSize) + (r() < 0.05 ? -5 : 0);
        const numBlocks = numSeqs * Math.ceil(40 / blockSize) + 1;
        const c = cache(r, numBlocks, blockSize, numKvHeads, headSize, numHeads);
        const tokens = qsl[numSeqs]!;
        const out = new Float32Array(tokens * numHeads * headSize);
        b.pagedAttention({
          query: f32(r, tokens * numHeads * headSize),
          out,
          cache: c,
          queryStartLoc: r() < 0.97 ? qsl : Int32Array.of(0, 3, 1),
          seqLens,
          blockTables: i32(r, numSeqs * Math.max(1, maxBlocksPerSeq), numBlocks),
          maxBlocksPerSeq: count(r, maxBlocksPerSeq),
          numSeqs,
          numHeads,
          softmaxScale: r() < 0.9 ? undefined : pick(r, [0.1, 0, Infinity]),
          slidingWindow: r() < 0.8 ? undefined : pick(r, [1, 5, 0]),
          fp8Query: r() < 0.8 ? undefined : { saturation: r() < 0.95 ? 'satfinite' : ('wrap' as never) },
        });
        return { out };
      }
      case 'amaxTensor': {
        const n = Math.floor(r() * 100);
        return { amax: b.amaxTensor({ x: f32(r, n), length: count(r, n) }) };
      }
      case 'amaxPerHead': {
        const t = d(), h = d(), hs = d();
        const out = new Float32Array(h);
        b.amaxPerHead({ x: f32(r, t * h * hs), out, numTokens: count(r, t), numHeads: h, headSize: hs, accumulate: r() < 0.5 });
        return { out };
      }
      case 'quantizeFp8':
      case 'dequantizeFp8': {
        const t = d(), h = d(), hs = d(), length = t * h * hs;
        const layouts = [
          { layout: { granularity: 'tensor' as const }, n: 1 },
          { layout: { granularity: 'head' as const, numHeads: h, headSize: hs }, n: h },
          { layout: { granularity: 'token' as const, tokenSize: h * hs }, n: t },
          { layout: { granularity: 'token_head' as const, numHeads: h, headSize: hs }, n: t * h },
        ];
        const l = pick(r, layouts);
        const format = r() < 0.97 ? pick(r, FP8) : ('e3m4' as never);
        if (op === 'quantizeFp8') {
          const out = new Uint8Array(length);
          b.quantizeFp8({ src: f32(r, length), out, length: count(r, length), scales: scales(r, l.n), layout: l.layout, format, saturation: pick(r, ['satfinite', 'nosat'] as const) });
          return { out };
        }
        const out = new Float32Array(length);
        const src = new Uint8Array(length).map(() => Math.floor(r() * 256));
        b.dequantizeFp8({ src, out, length: count(r, length), scales: scales(r, l.n), layout: l.layout, format });
        return { out };
      }
    }
  };
}

function mulberry(seed: number): Rand {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every contract op (a new op without a case in `run` fails the suite). */
const OPS: readonly KernelOpName[] = KERNEL_OPS;

describe.skipIf(!avail.available)('fuzz: facade vs reference on random shapes and bad values', () => {
  const isas = avail.available ? avail.cpu.isas : [];
  for (const isa of isas) {
    it(`${isa}: same error (code + argument) or matching outputs, for every op`, () => {
      const b = createBackend({ isa, threads: 2 });
      let threw = 0;
      let ok = 0;
      try {
        fc.assert(
          fc.property(fc.constantFrom(...OPS), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (op, seed) => {
            const call = randomCall(op, seed);
            const want = run(reference, call);
            const got = run(b, call);
            if ('threw' in want) {
              threw++;
              expect(got).toEqual(want);
              return;
            }
            ok++;
            expect('outputs' in got ? 'ran' : got.threw).toBe('ran');
            if (!('outputs' in got)) return;
            for (const [name, w] of Object.entries(want.outputs)) {
              const f = compareOutput(name, got.outputs[name]!, w, DEFAULT_TOLERANCES[op]);
              expect(f?.message, `${op} seed=${seed}`).toBeUndefined();
            }
          }),
          { numRuns: 600, seed: isas.indexOf(isa) + 42 },
        );
      } finally {
        b.dispose();
      }
      // Both branches must be exercised, or the fuzzer is not testing anything.
      expect(threw).toBeGreaterThan(50);
      expect(ok).toBeGreaterThan(50);
    });
  }
});

describe.skipIf(!avail.available)('fuzz: junk straight into the native addon never crashes', () => {
  const load = loadAddon();
  const junk = fc.oneof(
    fc.integer({ min: -3, max: 70 }),
    fc.constantFrom(NaN, Infinity, -1, 1.5, 2 ** 31, 2 ** 53, null, undefined, 'x', {}, true),
    fc.integer({ min: 0, max: 300 }).map((n) => new Float32Array(n).fill(0.5)),
    fc.integer({ min: 0, max: 300 }).map((n) => new Uint16Array(n).fill(0x3c00)),
    fc.integer({ min: 0, max: 300 }).map((n) => new Uint8Array(n).fill(0x38)),
    fc.integer({ min: 0, max: 40 }).map((n) => new Int32Array(n).map((_, i) => i % 5)),
    fc.integer({ min: 0, max: 40 }).map((n) => new Int32Array(n).fill(-7)),
    fc.integer({ min: 0, max: 40 }).map((n) => new Int32Array(n).fill(2 ** 30)),
    fc.constant(new Float64Array(8)),
  );
  const methods: (keyof NativeContext)[] = [...KERNEL_OPS, 'encodeFp8Bits'];

  it('every method, random positional arguments: returns or throws an Error with a code', () => {
    if (!load.ok) throw new Error(load.reason);
    const ctx = new load.addon.Context(2, 'auto', 0);
    let coded = 0;
    try {
      fc.assert(
        fc.property(fc.constantFrom(...methods), fc.array(junk, { minLength: 0, maxLength: 22 }), (m, args) => {
          try {
            (ctx[m] as (...a: unknown[]) => unknown)(...args);
          } catch (e) {
            expect(e).toBeInstanceOf(Error);
            expect(typeof (e as { code?: unknown }).code).toBe('string');
            coded++;
          }
        }),
        { numRuns: 3000, seed: 7 },
      );
      // Mostly-valid calls: a real call of each method with one argument replaced by junk.
      const f = (n: number, v = 0.1): Float32Array => new Float32Array(n).fill(v);
      const bases: [keyof NativeContext, unknown[]][] = [
        ['pagedAttention', [f(64), f(64), 3, new Uint8Array(256).fill(0x38), new Uint8Array(256).fill(0x38), 4, 4, 2, 8, Float32Array.of(1), Float32Array.of(1), Int32Array.of(0, 1, 2), Int32Array.of(3, 5), Int32Array.of(0, 1, 2, 3), 2, 2, 4, 0.3, 0, 0, Float32Array.of(1)]],
        ['reshapeAndCache', [f(48), f(48), Int32Array.of(0, -1, 7), 3, 4, new Uint8Array(128), new Uint8Array(128), 2, 4, 2, 8, Float32Array.of(1, 2), Float32Array.of(1, 2)]],
        ['linear', [f(8), 2, new Uint16Array(12).fill(0x3c00), 1, 3, 4, null, null, 0, f(3), f(6), 0, 0]],
        ['linear', [f(128), 2, new Uint8Array(3 * 2 * 34).fill(0x3c), 16, 3, 64, null, null, 0, f(3), f(6), 1, 0]],
        ['linear', [f(200), 2, new Int8Array(300).fill(3), 25, 3, 100, f(3), null, 0, f(3), f(6), 1, 0.25]],
        ['embedding', [new Uint16Array(20).fill(0x3c00), 2, 5, 4, null, null, 0, Int32Array.of(0, 4), f(8), 2]],
        ['rope', [f(16), f(16), Int32Array.of(0, 7), 2, 1, 1, 8, 8, 8, f(32, 0.5), f(32, 0.5), false]],
        ['quantizeFp8', [f(16), new Uint8Array(16), 16, Float32Array.of(1, 2), 4, 2, 0, true]],
        ['dequantizeFp8', [new Uint8Array(16), f(16), 16, Float32Array.of(1, 2, 3, 4), 4, 0, 1]],
        ['amaxPerHead', [f(16), f(2), 2, 2, 4, true]],
        ['encodeFp8Bits', [0x3f800000, 16, new Uint8Array(16), 0, true]],
      ];
      for (const [m, base] of bases) {
        (ctx[m] as (...a: unknown[]) => void)(...base); // the unmodified call is valid
        fc.assert(
          fc.property(fc.integer({ min: 0, max: base.length - 1 }), junk, (i, j) => {
            const a = base.slice();
            a[i] = j;
            try {
              (ctx[m] as (...x: unknown[]) => void)(...a);
            } catch (e) {
              expect(typeof (e as { code?: unknown }).code, `${m}[${i}]`).toBe('string');
            }
          }),
          { numRuns: 400, seed: 8 },
        );
      }
    } finally {
      ctx.dispose();
    }
    expect(coded).toBeGreaterThan(1000);
  });

  it('a disposed context throws BACKEND_UNAVAILABLE instead of touching freed threads', () => {
    if (!load.ok) throw new Error(load.reason);
    const ctx = new load.addon.Context(2, 'auto', 0);
    ctx.dispose();
    ctx.dispose();
    expect(() => ctx.add(new Float32Array(4), new Float32Array(4), new Float32Array(4), 4)).toThrow(
      expect.objectContaining({ code: 'BACKEND_UNAVAILABLE' }),
    );
    expect(ctx.threads).toBe(0);
  });
});
