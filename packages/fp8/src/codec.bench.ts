import { bench, describe } from 'vitest';
import { decodeFp8Array, encodeFp8Array, encodeFp8FromBf16Bits, FP8_FORMAT_NAMES, PER_TENSOR, quantizeScaled } from './index.js';
import { f32ToBf16Bits } from './half.js';

// A KV-cache-sized buffer (16 Mi values: 64 MiB of float32), larger than the caches, so memcpy is a real
// memory-bandwidth baseline. Each group compares against memcpy (Uint8Array.prototype.set) of the bytes the
// operation must write (decode) or read (encode); vitest prints the ratio within each group.
const N = 1 << 24;
const x = new Float32Array(N);
for (let i = 0; i < N; i++) x[i] = Math.sin(i * 0.7) * 30 + Math.cos(i * 0.013) * 5;
const xBytes = new Uint8Array(x.buffer);
const bf16 = Uint16Array.from(x.subarray(0, N), (v) => f32ToBf16Bits(v));
const codes = encodeFp8Array(x, 'e4m3fn');
const f32Out = new Float32Array(N);
const f32OutBytes = new Uint8Array(f32Out.buffer);
const codesOut = new Uint8Array(N);
const options = { time: 1500, warmupTime: 300 };

for (const format of FP8_FORMAT_NAMES) {
  const q = encodeFp8Array(x, format);
  describe(`decode ${format} (16 Mi values -> float32)`, () => {
    bench('memcpy of the output bytes (baseline)', () => f32OutBytes.set(xBytes), options);
    bench(`decodeFp8Array ${format}`, () => void decodeFp8Array(q, format, { out: f32Out }), options);
  });
  describe(`encode ${format} (16 Mi float32 values)`, () => {
    bench('memcpy of the input bytes (baseline)', () => f32OutBytes.set(xBytes), options);
    bench(`encodeFp8Array ${format}`, () => void encodeFp8Array(x, format, { out: codesOut }), options);
  });
}

describe('scaled and 16-bit sources, e4m3fn (16 Mi values)', () => {
  bench('memcpy of the float32 bytes (baseline)', () => f32OutBytes.set(xBytes), options);
  bench('quantizeScaled per-tensor', () => void quantizeScaled(x, 0.25, PER_TENSOR, 'e4m3fn', { out: codesOut }), options);
  bench('encodeFp8FromBf16Bits', () => void encodeFp8FromBf16Bits(bf16, 'e4m3fn', { out: codesOut }), options);
  bench('decode to float32', () => void decodeFp8Array(codes, 'e4m3fn', { out: f32Out }), options);
});
