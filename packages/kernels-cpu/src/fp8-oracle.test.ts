import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { encodeFp8, encodeFp8BitRange, fp8DecodeTable, type Fp8Format, type Saturation } from '@kvq/fp8';
import { fixturePath } from '@kvq/fixtures';
import { describe, expect, it } from 'vitest';
import { FORMAT_CODE } from '@kvq/kernels/native';
import { cpuAvailability, createBackend } from './backend.js';
import { loadAddon } from './load.js';

const avail = cpuAvailability();
const isas = avail.available ? avail.cpu.isas : [];
const CHUNK = 2 ** 24;

/**
 * 2^24-input chunks spanning every regime: +0 and float32 subnormals (0), both formats' subnormal and normal
 * ranges (56, 60), 1.0 (63), +inf and NaN payloads (127), the negative twins (128, 184, 188, 191) and -NaN (255).
 */
const CHUNKS = [0, 56, 60, 63, 127, 128, 184, 188, 191, 255];

const MODES = [
  { key: 'e4m3_satfinite', format: 'e4m3fn', saturation: 'satfinite' },
  { key: 'e4m3_nosat', format: 'e4m3fn', saturation: 'nosat' },
  { key: 'e5m2_satfinite', format: 'e5m2', saturation: 'satfinite' },
  { key: 'e5m2_nosat', format: 'e5m2', saturation: 'nosat' },
] as const;

interface Oracle {
  decode_e4m3: number[];
  decode_e5m2: number[];
  [mode: string]: unknown;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

const oracle = JSON.parse(readFileSync(fixturePath('oracles/fp8_cuda_oracle.json'), 'utf8')) as Oracle;

describe.skipIf(!avail.available)('native FP8 codec vs CUDA (oracles/fp8_cuda_oracle.json of @kvq/fixtures)', () => {
  const scratch = new Uint8Array(CHUNK);

  for (const isa of isas) {
    it(`${isa}: bulk encode of ${CHUNKS.length} chunks x 4 modes hashes like CUDA's`, () => {
      const b = createBackend({ isa });
      try {
        const mismatched: string[] = [];
        for (const mode of MODES) {
          const want = (oracle[mode.key] as { sha256_chunks_2p24: string[] }).sha256_chunks_2p24;
          for (const chunk of CHUNKS) {
            b.encodeFp8Bits(chunk * CHUNK, CHUNK, mode.format, { saturation: mode.saturation, out: scratch });
            if (sha256(scratch) !== want[chunk]) mismatched.push(`${mode.key}#${chunk}`);
          }
        }
        expect(mismatched).toEqual([]);
      } finally {
        b.dispose();
      }
    });

    it(`${isa}: vector decode (dequantizeFp8, scale 1) gives CUDA's float32 bits for all 256 codes`, () => {
      const b = createBackend({ isa });
      try {
        const codes = new Uint8Array(256).map((_, i) => i);
        for (const [format, table] of [
          ['e4m3fn', oracle.decode_e4m3],
          ['e5m2', oracle.decode_e5m2],
        ] as const) {
          const out = new Float32Array(256);
          b.dequantizeFp8({ src: codes, out, length: 256, scales: Float32Array.of(1), layout: { granularity: 'tensor' }, format });
          expect(Array.from(new Uint32Array(out.buffer)), format).toEqual(table);
        }
      } finally {
        b.dispose();
      }
    });
  }

  it('fp8.h scalar decode (the header a CUDA build includes) gives CUDA bits for all 256 codes', () => {
    const load = loadAddon();
    if (!load.ok) throw new Error(load.reason);
    const f32 = new Float32Array(1);
    const u32 = new Uint32Array(f32.buffer);
    for (const [format, table] of [
      ['e4m3fn', oracle.decode_e4m3],
      ['e5m2', oracle.decode_e5m2],
    ] as const) {
      const got = table.map((_, code) => {
        f32[0] = load.addon.fp8Decode(code, FORMAT_CODE[format]);
        // JS canonicalizes NaN on the way out of C++; compare NaN codes by class.
        return Number.isNaN(f32[0]) ? 0x7fffffff : u32[0]!;
      });
      expect(got, format).toEqual(table);
    }
  });
});

describe.skipIf(!avail.available)('FNUZ formats: native equals @kvq/fp8 (derived from the spec; CUDA has no FNUZ)', () => {
  const fnuz: Fp8Format[] = ['e4m3fnuz', 'e5m2fnuz'];
  const sats: Saturation[] = ['satfinite', 'nosat'];
  const chunks = [0, 59, 60, 63, 67, 127, 128, 187, 191, 255];
  const native = new Uint8Array(CHUNK);
  const reference = new Uint8Array(CHUNK);

  it(`bulk encode of ${chunks.length} chunks x 2 formats x 2 saturations is byte-identical (${isas[0]})`, () => {
    const b = createBackend();
    try {
      const mismatched: string[] = [];
      for (const format of fnuz) {
        for (const saturation of sats) {
          for (const chunk of chunks) {
            b.encodeFp8Bits(chunk * CHUNK, CHUNK, format, { saturation, out: native });
            encodeFp8BitRange(chunk * CHUNK, CHUNK, format, { saturation, out: reference });
            if (Buffer.compare(native, reference) !== 0) mismatched.push(`${format}/${saturation}#${chunk}`);
          }
        }
      }
      expect(mismatched).toEqual([]);
    } finally {
      b.dispose();
    }
  });

  for (const isa of isas) {
    it(`${isa}: every ISA's bulk encode agrees on a spread of chunks, and decode tables agree`, () => {
      const b = createBackend({ isa });
      try {
        for (const format of fnuz) {
          for (const chunk of [60, 127, 188]) {
            b.encodeFp8Bits(chunk * CHUNK, CHUNK, format, { out: native });
            encodeFp8BitRange(chunk * CHUNK, CHUNK, format, { out: reference });
            expect(Buffer.compare(native, reference), `${format}#${chunk}`).toBe(0);
          }
          const codes = new Uint8Array(256).map((_, i) => i);
          const out = new Float32Array(256);
          b.dequantizeFp8({ src: codes, out, length: 256, scales: Float32Array.of(1), layout: { granularity: 'tensor' }, format });
          const want = fp8DecodeTable(format);
          for (let c = 0; c < 256; c++) expect(Object.is(out[c], want[c]) || (Number.isNaN(out[c]) && Number.isNaN(want[c])), `${format} 0x${c.toString(16)}`).toBe(true);
        }
      } finally {
        b.dispose();
      }
    });
  }

  it('fp8.h scalar encode equals @kvq/fp8 encodeFp8 on edge values in every format and saturation', () => {
    const load = loadAddon();
    if (!load.ok) throw new Error(load.reason);
    const values = [0, -0, 1, -1, 448, 464, 464.01, 480, -500, 240, 248, 57344, 61440, 61441, 1e-10, -1e-10, 2 ** -9, 2 ** -10, 2 ** -17, 3 * 2 ** -11, Infinity, -Infinity, NaN, 1.0625, 0.0009765625];
    for (const format of ['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'] as const) {
      for (const saturation of sats) {
        for (const v of values) {
          expect(load.addon.fp8Encode(v, FORMAT_CODE[format], saturation === 'satfinite'), `${format}/${saturation} ${v}`).toBe(
            encodeFp8(v, format, saturation),
          );
        }
      }
    }
  });
});
