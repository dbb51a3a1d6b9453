import { describe, expect, it } from 'vitest';
import type { GgmlWeightDtype, HostArgs, KernelBackend, KernelOpName, PagedAttentionArgs, ReshapeAndCacheArgs } from '../contract.js';
import { dequantizeRow } from '../quant/dequantize.js';
import { roundTripActivationsInt8, roundTripActivationsQ16, roundTripActivationsQ8 } from '../quant/activations.js';
import { createReferenceBackend } from '../reference/backend.js';
import { KernelError } from '../errors.js';
import {
  badInputCases,
  formatParityReport,
  KV_QUANT_DTYPE_LIST,
  parityCases,
  runBadInputSuite,
  runParitySuite,
  type BadInputCase,
} from './index.js';

/** An op's arguments with host arrays (the mutants below compute on host memory). */
type HostOf<K extends KernelOpName> = HostArgs<Parameters<KernelBackend[K]>[0]>;

const ref = createReferenceBackend();

describe('parity kit', () => {
  it('passes the reference against itself on every case, covering every op', () => {
    const report = runParitySuite(createReferenceBackend(), ref, { supportedKvQuantDtypes: KV_QUANT_DTYPE_LIST, attentionLse: true, mixedKv: true });
    expect(report.unsupported).toBe(0);
    expect(report.failures, formatParityReport(report)).toEqual([]);
    expect(report.cases).toBe(parityCases().length);
    const ops = Object.keys(report.byOp).sort();
    expect(ops).toEqual(
      [
        'add',
        'amaxPerHead',
        'argmax',
        'amaxTensor',
        'dequantizeFp8',
        'embedding',
        'geluTanhAndMul',
        'linear',
        'pagedAttention',
        'quantizeFp8',
        'reshapeAndCache',
        'rmsNorm',
        'rope',
        'siluAndMul',
        'softmax',
      ].sort(),
    );
  });

  describe('write-time-scaled KV dtypes a backend has not implemented', () => {
    const quantCases = parityCases({ ops: ['reshapeAndCache', 'pagedAttention'] }).filter((c) => c.kvDtype !== undefined && !c.mixedKv);
    const isQuant = (d: string) => (KV_QUANT_DTYPE_LIST as readonly string[]).includes(d);
    /** The reference, but `reshapeAndCache` / `pagedAttention` on a write-time-scaled cache behave as `mode` says. */
    const refusing = (mode: 'unsupported' | 'other-error' | 'runs' | 'corrupts'): KernelBackend => {
      const r = createReferenceBackend();
      const guard = (dtype: string) => {
        if (!isQuant(dtype)) return;
        if (mode === 'unsupported') throw new KernelError('UNSUPPORTED', `KV dtype ${dtype} not implemented`);
        if (mode === 'other-error') throw new Error('crash');
      };
      return {
        ...r,
        name: `refusing-${mode}`,
        reshapeAndCache(a: ReshapeAndCacheArgs) {
          guard(a.cache.dtype);
          r.reshapeAndCache(a);
          if (mode === 'corrupts' && isQuant(a.cache.dtype)) { const k = a.cache.key as Uint8Array; k[k.length - 1] = k[k.length - 1]! ^ 1; }
        },
        pagedAttention(a: PagedAttentionArgs) {
          guard(a.cache.dtype);
          r.pagedAttention(a);
          if (mode === 'corrupts' && isQuant(a.cache.dtype)) a.out[0] = a.out[0]! + 1;
        },
      };
    };

    it('has reshape and attention cases for every such dtype', () => {
      for (const d of KV_QUANT_DTYPE_LIST) {
        expect(quantCases.some((c) => c.op === 'reshapeAndCache' && c.kvDtype === d)).toBe(true);
        expect(quantCases.some((c) => c.op === 'pagedAttention' && c.kvDtype === d)).toBe(true);
      }
    });

    it('accepts a typed UNSUPPORTED refusal by default and counts it', () => {
      const report = runParitySuite(refusing('unsupported'), ref, { cases: quantCases });
      expect(report.failures, formatParityReport(report)).toEqual([]);
      expect(report.unsupported).toBe(quantCases.length);
      expect(formatParityReport(report)).toContain('refused as UNSUPPORTED');
    });

    it('fails a crash, a silent run, or a declared dtype that differs from the reference', () => {
      expect(runParitySuite(refusing('other-error'), ref, { cases: quantCases }).failures).toHaveLength(quantCases.length);
      const ran = runParitySuite(refusing('runs'), ref, { cases: quantCases });
      expect(ran.failures).toHaveLength(quantCases.length);
      expect(ran.failures[0]!.message).toContain('supportedKvQuantDtypes');
      expect(runParitySuite(refusing('unsupported'), ref, { cases: quantCases, supportedKvQuantDtypes: ['nvfp4'] }).failures.length).toBe(
        // Its lse case is still refused correctly (the lse output is not declared).
        quantCases.filter((c) => c.kvDtype === 'nvfp4' && !c.lse).length,
      );
      const corrupt = runParitySuite(refusing('corrupts'), ref, { cases: quantCases, supportedKvQuantDtypes: KV_QUANT_DTYPE_LIST });
      expect(corrupt.failures.length).toBe(quantCases.length);
      expect(() => runParitySuite(ref, ref, { cases: quantCases, supportedKvQuantDtypes: ['e4m3fn' as 'nvfp4'] })).toThrow(KernelError);
    });
  });

  describe('mixed K/V caches (cache.valueDtype) a backend has not implemented', () => {
    const mixedCases = parityCases({ ops: ['reshapeAndCache', 'pagedAttention'] }).filter((c) => c.mixedKv);
    const all = { cases: mixedCases, supportedKvQuantDtypes: KV_QUANT_DTYPE_LIST, attentionLse: true };
    /** The reference, refusing mixed caches with UNSUPPORTED (as a GPU backend does). */
    const refusesMixed: KernelBackend = {
      ...ref,
      name: 'refuses-mixed',
      reshapeAndCache(a: ReshapeAndCacheArgs) {
        if (a.cache.valueDtype !== a.cache.dtype) throw new KernelError('UNSUPPORTED', 'no mixed caches here', { argument: 'cache.valueDtype' });
        ref.reshapeAndCache(a);
      },
      pagedAttention(a: PagedAttentionArgs) {
        if (a.cache.valueDtype !== a.cache.dtype) throw new KernelError('UNSUPPORTED', 'no mixed caches here', { argument: 'cache.valueDtype' });
        ref.pagedAttention(a);
      },
    };

    it('has reshape and attention cases: dense + write-time-scaled, two such layouts, two FP8 formats, the lse output', () => {
      const labels = mixedCases.map((c) => c.label).join('\n');
      expect(labels).toContain('reshapeAndCache int8_per_token_head/V=int4_g32_f16/');
      expect(labels).toContain('pagedAttention int8_per_token_head/V=int4_g32_f16/');
      expect(labels).toContain('reshapeAndCache e4m3fn/V=e5m2/head');
      expect(labels).toContain('pagedAttention e4m3fn/V=e5m2/head');
      expect(mixedCases.some((c) => c.op === 'pagedAttention' && c.kvDtype !== undefined && c.kvValueDtype !== undefined)).toBe(true);
      expect(mixedCases.some((c) => c.lse)).toBe(true);
    });

    it('accepts a typed UNSUPPORTED refusal by default; fails a backend that runs them undeclared', () => {
      const refused = runParitySuite(refusesMixed, ref, all);
      expect(refused.failures, formatParityReport(refused)).toEqual([]);
      expect(refused.unsupported).toBe(mixedCases.length);
      const ran = runParitySuite(ref, ref, all);
      expect(ran.failures).toHaveLength(mixedCases.length);
      expect(ran.failures[0]!.message).toContain('set mixedKv');
      expect(runParitySuite(refusesMixed, ref, { ...all, mixedKv: true }).failures).toHaveLength(mixedCases.length);
      expect(runParitySuite(ref, ref, { ...all, mixedKv: true }).failures).toEqual([]);
    });

    it('a mixed case with write-time-scaled pools needs both dtypes declared', () => {
      const report = runParitySuite(refusesMixed, ref, { ...all, mixedKv: true, supportedKvQuantDtypes: ['int8_per_token_head'] });
      const needsOther = mixedCases.filter((c) => (c.kvDtype !== undefined && c.kvDtype !== 'int8_per_token_head') || c.kvValueDtype !== undefined);
      // Those are refused (as their dtypes are undeclared); the rest must run, and this backend refuses them.
      expect(report.unsupported).toBe(needsOther.length);
      expect(report.failures).toHaveLength(mixedCases.length - needsOther.length);
    });
  });

  describe('the lse output of pagedAttention', () => {
    const lseCases = parityCases({ ops: ['pagedAttention'] }).filter((c) => c.lse);
    const dropsLse: KernelBackend = { ...ref, name: 'drops-lse', pagedAttention: (a: PagedAttentionArgs) => ref.pagedAttention({ ...a, lse: undefined }) };
    const refusesLse: KernelBackend = {
      ...ref,
      name: 'refuses-lse',
      pagedAttention(a: PagedAttentionArgs) {
        if (a.lse) throw new KernelError('UNSUPPORTED', 'no lse here');
        ref.pagedAttention(a);
      },
    };

    it('has lse cases for every KV dtype', () => {
      for (const d of ['f32', 'bf16', 'f16', 'e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz', ...KV_QUANT_DTYPE_LIST]) {
        expect(lseCases.some((c) => c.label.startsWith(`pagedAttention ${d}/`))).toBe(true);
      }
    });

    it('fails a backend that leaves lse unwritten, or writes it without declaring it; accepts a typed refusal', () => {
      const all = { cases: lseCases, supportedKvQuantDtypes: KV_QUANT_DTYPE_LIST };
      expect(runParitySuite(dropsLse, ref, { ...all, attentionLse: true }).failures).toHaveLength(lseCases.length);
      const undeclared = runParitySuite(ref, ref, all);
      expect(undeclared.failures).toHaveLength(lseCases.length);
      expect(undeclared.failures[0]!.message).toContain('attentionLse');
      const refused = runParitySuite(refusesLse, ref, all);
      expect(refused.failures).toEqual([]);
      expect(refused.unsupported).toBe(lseCases.length);
    });
  });

  it('covers every awkward dimension in the attention and cache cases', () => {
    const labels = parityCases({ ops: ['pagedAttention', 'reshapeAndCache'] }).map((c) => c.label);
    const text = labels.join('\n');
    for (const d of ['f32', 'bf16', 'f16', 'e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz']) {
      expect(text).toContain(`pagedAttention ${d}/tensor`);
      expect(text).toContain(`reshapeAndCache ${d}/tensor`);
    }
    for (const d of ['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz']) {
      expect(text).toContain(`pagedAttention ${d}/head`);
      expect(text).toContain(`reshapeAndCache ${d}/head`);
    }
    for (const hs of [8, 16, 64, 128]) expect(text).toMatch(new RegExp(`pagedAttention .* hs=${hs} `));
    for (const bs of [1, 16, 32]) expect(text).toMatch(new RegExp(`pagedAttention .* bs=${bs} `));
    for (const [h, kv] of [[2, 2], [4, 2], [8, 2], [16, 2], [8, 1]]) expect(text).toContain(`heads=${h}/${kv}`);
    expect(text).toContain('fp8-query');
    expect(text).toContain('window=');
    expect(text).toContain('prefill-1025');
    for (const t of [1, 7, 17, 33, 1025]) {
      expect(labels.some((l) => l.startsWith('reshapeAndCache') && l.includes(`tokens=${t} `))).toBe(true);
    }
  });

  it('the full size is a superset of the quick size', () => {
    expect(parityCases({ size: 'full' }).length).toBeGreaterThan(parityCases().length);
  });

  it('rejects nothing for the reference on bad input, and every case names its argument', () => {
    expect(runBadInputSuite(ref)).toEqual([]);
    expect(badInputCases().length).toBeGreaterThanOrEqual(45);
  });
});

/** The reference with one op replaced. */
function mutant(op: KernelOpName, impl: (args: never) => unknown): KernelBackend {
  return { ...createReferenceBackend(), name: `mutant-${op}`, [op]: impl } as KernelBackend;
}

describe('parity kit detects broken backends', () => {
  const mutants: [string, KernelOpName, (args: never) => unknown][] = [
    ['linear ignores bias', 'linear', (a: HostOf<'linear'>) => ref.linear({ ...a, bias: undefined })],
    [
      'linear writes one element past the output',
      'linear',
      (a: HostOf<'linear'>) => {
        ref.linear(a);
        a.out[a.rows * a.weight.rows] = 0;
      },
    ],
    ['rmsNorm ignores the weight', 'rmsNorm', (a: HostOf<'rmsNorm'>) => ref.rmsNorm({ ...a, weight: new Float32Array(a.hidden).fill(1) })],
    ['rope uses the other pairing', 'rope', (a: HostOf<'rope'>) => ref.rope({ ...a, style: a.style === 'rotate_half' ? 'interleaved' : 'rotate_half' })],
    ['rope skips the keys', 'rope', (a: HostOf<'rope'>) => ref.rope({ ...a, key: new Float32Array(a.key.length) })],
    ['embedding off by one row', 'embedding', (a: HostOf<'embedding'>) => ref.embedding({ ...a, ids: a.ids.map((i) => (i + 1) % a.table.rows) })],
    [
      'siluAndMul uses sigmoid only',
      'siluAndMul',
      (a: HostOf<'siluAndMul'>) => {
        for (let i = 0; i < a.length; i++) a.out[i] = (1 / (1 + Math.exp(-a.gate[i]!))) * a.up[i]!;
      },
    ],
    [
      'geluTanhAndMul uses the exact (erf) GELU',
      'geluTanhAndMul',
      (a: HostOf<'geluTanhAndMul'>) => {
        const erf = (x: number) => {
          // erf by its Taylor series (accurate for the kit's |x| <= 4 gates), saturated past |x| > 6.
          if (Math.abs(x) > 6) return Math.sign(x);
          let s = 0;
          let term = x;
          for (let n = 0; n < 200; n++) {
            s += term / (2 * n + 1);
            term *= (-x * x) / (n + 1);
          }
          return (2 / Math.sqrt(Math.PI)) * s;
        };
        for (let i = 0; i < a.length; i++) a.out[i] = 0.5 * a.gate[i]! * (1 + erf(a.gate[i]! / Math.SQRT2)) * a.up[i]!;
      },
    ],
    [
      'softmax forgets NaN rows',
      'softmax',
      (a: HostOf<'softmax'>) => {
        const x = a.x.slice();
        for (let i = 0; i < a.rows * a.cols; i++) if (Number.isNaN(x[i]!)) x[i] = 0;
        ref.softmax({ ...a, x, out: a.out === a.x ? a.x : a.out });
      },
    ],
    [
      'reshapeAndCache uses only the first k scale',
      'reshapeAndCache',
      (a: ReshapeAndCacheArgs) => {
        const kScale = a.cache.kScale.subarray(0, 1);
        const vScale = a.cache.vScale.subarray(0, 1);
        ref.reshapeAndCache({ ...a, cache: { ...a.cache, kScale, vScale } });
      },
    ],
    [
      'reshapeAndCache truncates instead of rounding',
      'reshapeAndCache',
      (a: ReshapeAndCacheArgs) => ref.reshapeAndCache({ ...a, key: a.key.map((v) => v * 0.97), value: a.value }),
    ],
    [
      'reshapeAndCache writes padding tokens to slot 0',
      'reshapeAndCache',
      (a: ReshapeAndCacheArgs) => ref.reshapeAndCache({ ...a, slotMapping: a.slotMapping.map((s) => (s < 0 ? 0 : s)) }),
    ],
    [
      'pagedAttention ignores the sliding window',
      'pagedAttention',
      (a: PagedAttentionArgs) => ref.pagedAttention({ ...a, slidingWindow: undefined }),
    ],
    [
      'pagedAttention ignores FP8-query mode',
      'pagedAttention',
      (a: PagedAttentionArgs) => ref.pagedAttention({ ...a, fp8Query: undefined }),
    ],
    [
      'pagedAttention uses per-tensor scales only',
      'pagedAttention',
      (a: PagedAttentionArgs) =>
        ref.pagedAttention({ ...a, cache: { ...a.cache, kScale: a.cache.kScale.subarray(0, 1), vScale: a.cache.vScale.subarray(0, 1) } }),
    ],
    [
      'pagedAttention uses softmaxScale 1/headSize',
      'pagedAttention',
      (a: PagedAttentionArgs) => ref.pagedAttention({ ...a, softmaxScale: a.softmaxScale ?? 1 / a.cache.headSize }),
    ],
    [
      'pagedAttention places chunked queries one position early',
      'pagedAttention',
      (a: PagedAttentionArgs) => {
        // Positions off by one for chunked prefill: query i sits at seqLen - 1 - queryLen + i.
        const seqLens = a.seqLens.map((l, s) => (a.queryStartLoc[s + 1]! - a.queryStartLoc[s]! < l ? l - 1 : l));
        ref.pagedAttention({ ...a, seqLens });
      },
    ],
    ['amaxPerHead ignores accumulate', 'amaxPerHead', (a: HostOf<'amaxPerHead'>) => ref.amaxPerHead({ ...a, accumulate: false })],
    ['amaxTensor ignores NaN', 'amaxTensor', (a: HostOf<'amaxTensor'>) => ref.amaxTensor({ ...a, x: a.x.map((v) => (Number.isNaN(v) ? 0 : v)) })],
    ['quantizeFp8 always saturates', 'quantizeFp8', (a: HostOf<'quantizeFp8'>) => ref.quantizeFp8({ ...a, saturation: 'satfinite' })],
    [
      'dequantizeFp8 decodes fnuz as OCP',
      'dequantizeFp8',
      (a: HostOf<'dequantizeFp8'>) =>
        ref.dequantizeFp8({ ...a, format: a.format === 'e4m3fnuz' ? 'e4m3fn' : a.format === 'e5m2fnuz' ? 'e5m2' : a.format }),
    ],
  ];

  it.each(mutants)('%s', (_label, op, impl) => {
    const report = runParitySuite(mutant(op, impl), ref, { ops: [op], maxFailures: 1 });
    expect(report.failures.length, formatParityReport(report)).toBeGreaterThan(0);
    // Only the mutated op's cases ran, and each failure names it.
    expect(report.failures.every((f) => f.op === op)).toBe(true);
  });

  it('a candidate that throws is reported, not propagated', () => {
    const report = runParitySuite(
      mutant('add', () => {
        throw new Error('boom');
      }),
      ref,
      { ops: ['add'] },
    );
    expect(report.failures.length).toBe(report.cases);
    expect(report.failures[0]!.message).toContain('candidate threw: Error: boom');
  });

  it('runBadInputSuite reports a backend that accepts bad input or names the wrong argument', () => {
    const lax: KernelBackend = {
      ...createReferenceBackend(),
      amaxTensor: () => 0,
      add: () => {
        throw Object.assign(new Error('x'), { name: 'KernelError', code: 'SHAPE_MISMATCH', argument: 'a' });
      },
    };
    const failures = runBadInputSuite(lax);
    const cases: BadInputCase[] = badInputCases().filter((c) => c.op === 'amaxTensor' || c.op === 'add');
    expect(failures.map((f) => f.label).sort()).toEqual(cases.map((c) => `${c.op}: ${c.label}`).sort());
    expect(failures.length).toBe(cases.length);
  });
});

describe('parity kit: quantized weights', () => {
  const quantized = ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k', 'fp8_e4m3', 'int8', 'int4'];

  it('every quantized dtype has GEMV and GEMM linear cases with and without bias, and embedding cases', () => {
    const labels = parityCases({ ops: ['linear', 'embedding'] }).map((c) => c.label);
    for (const d of quantized) {
      const lin = labels.filter((l) => l.startsWith(`linear ${d}`) && /^linear \S+ /.test(l));
      expect(lin.some((l) => l.includes(' gemv rows=1 ')), d).toBe(true);
      expect(lin.filter((l) => / gemm rows=[3-7] /.test(l)).length, d).toBeGreaterThan(0);
      expect(lin.some((l) => l.endsWith('+bias')), d).toBe(true);
      expect(lin.some((l) => !l.endsWith('+bias')), d).toBe(true);
      expect(labels.filter((l) => l.startsWith(`embedding ${d}`)).length, d).toBeGreaterThan(0);
    }
    for (const v of ['fp8_e4m3/channel', 'fp8_e4m3/tensor', 'int8/channel', 'int8/tensor', 'int4/g32-sym', 'int4/g16-asym', 'int4/channel-asym', 'int4/channel-sym']) {
      expect(labels.some((l) => l.startsWith(`linear ${v} `)), v).toBe(true);
    }
  });

  it('a backend that does not support a quantized dtype FAILS the kit (never skipped)', () => {
    const dense = new Set(['f32', 'bf16', 'f16']);
    const partial: KernelBackend = {
      ...createReferenceBackend(),
      name: 'dense-only',
      linear(a) {
        if (!dense.has(a.weight.dtype)) throw Object.assign(new Error(`dtype ${a.weight.dtype}`), { name: 'KernelError', code: 'UNSUPPORTED' });
        ref.linear(a);
      },
    };
    const report = runParitySuite(partial, ref, { ops: ['linear'] });
    const failed = new Set(report.failures.map((f) => f.label.split(' ')[1]!.split('/')[0]));
    expect([...failed].sort()).toEqual([...quantized].sort());
    expect(report.failures[0]!.message).toContain('candidate threw: KernelError UNSUPPORTED');
  });

  it('a q4_0 decoder with the nibble halves swapped fails', () => {
    const swapped: KernelBackend = {
      ...createReferenceBackend(),
      embedding(a) {
        if (a.table.dtype !== 'q4_0') return ref.embedding(a);
        const data = (a.table.data as Uint8Array).map((b, i) => (i % 18 < 2 ? b : ((b & 0x0f) << 4) | (b >> 4)));
        ref.embedding({ ...a, table: { ...a.table, data } });
      },
    };
    const report = runParitySuite(swapped, ref, { ops: ['embedding'] });
    expect(report.failures.length).toBeGreaterThan(0);
    expect(report.failures.every((f) => f.label.startsWith('embedding q4_0'))).toBe(true);
  });
});

describe('parity kit: the linear tolerance fits float32 accumulation on quantized weights', () => {
  it('a candidate that dequantizes to float32 and accumulates in float32 (sequentially) passes every quantized linear case', () => {
    const f32acc: KernelBackend = {
      ...createReferenceBackend(),
      name: 'f32-accumulation',
      linear(a: HostOf<'linear'>) {
        const { weight, out, rows, bias } = a;
        const x =
          a.activations === 'q16'
            ? roundTripActivationsQ16(a.x, rows, weight.cols)
            : a.activations !== 'q8'
            ? a.x
            : weight.dtype === 'int8'
              ? roundTripActivationsInt8(a.x, rows, weight.cols, a.activationScale)
              : roundTripActivationsQ8(a.x, rows, weight.cols, weight.dtype as GgmlWeightDtype);
        const row = new Float32Array(weight.cols);
        for (let o = 0; o < weight.rows; o++) {
          dequantizeRow(weight, o, row);
          for (let r = 0; r < rows; r++) {
            let acc = 0;
            for (let i = 0; i < weight.cols; i++) acc = Math.fround(acc + Math.fround(x[r * weight.cols + i]! * row[i]!));
            out[r * weight.rows + o] = bias ? Math.fround(acc + bias[o]!) : acc;
          }
        }
      },
    };
    const cases = parityCases({ size: 'full', ops: ['linear'] }).filter((c) => !/^linear (f32|bf16|f16) /.test(c.label));
    const report = runParitySuite(f32acc, ref, { cases });
    expect(report.failures, formatParityReport(report)).toEqual([]);
  });

  it("a candidate that ignores activations: 'q8' (float32 activations) fails every q8 case", () => {
    const ignoring: KernelBackend = { ...createReferenceBackend(), name: 'ignores-q8', linear: (a) => ref.linear({ ...a, activations: 'f32' }) };
    const cases = parityCases({ ops: ['linear'] }).filter((c) => c.label.includes('activations=q8'));
    expect(cases.length).toBeGreaterThanOrEqual(32);
    const report = runParitySuite(ignoring, ref, { cases });
    expect(report.failures.map((f) => f.label).sort()).toEqual(cases.map((c) => c.label).sort());
  });

  it("a candidate that ignores activations: 'q16' (float32 activations) fails every q16 case", () => {
    const ignoring: KernelBackend = { ...createReferenceBackend(), name: 'ignores-q16', linear: (a) => ref.linear({ ...a, activations: 'f32' }) };
    const cases = parityCases({ ops: ['linear'] }).filter((c) => c.label.includes('activations=q16'));
    expect(cases.length).toBe(12);
    const report = runParitySuite(ignoring, ref, { cases });
    expect(report.failures.map((f) => f.label).sort()).toEqual(cases.map((c) => c.label).sort());
  });
});
