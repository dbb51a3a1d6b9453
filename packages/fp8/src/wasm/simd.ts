import { simdModuleBytes, type SimdFormatParams } from './module.js';

// The ES lib has no WebAssembly types and @types/node 20 does not declare them: the little we use, typed here.
declare const WebAssembly: {
  validate(bytes: Uint8Array): boolean;
  Memory: new (descriptor: { initial: number }) => { readonly buffer: ArrayBuffer };
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { readonly exports: Record<string, unknown> };
};

/** Values per WebAssembly call (a chunk stays cache-resident between the copy-in, the kernel and the copy-out). */
export const SIMD_CHUNK = 16384;

interface SimdKernels {
  readonly f32: Float32Array;
  readonly codes: Uint8Array;
  readonly encode: (src: number, dst: number, n: number, ...params: number[]) => void;
  readonly decode: (src: number, dst: number, n: number, ...params: number[]) => void;
}

let kernels: SimdKernels | null | undefined;
let enabled = true;

function instantiate(): SimdKernels | null {
  try {
    if (typeof WebAssembly !== 'object') return null;
    const bytes = simdModuleBytes();
    if (!WebAssembly.validate(bytes)) return null; // engine without SIMD
    const memory = new WebAssembly.Memory({ initial: 2 });
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
    const exports = instance.exports as unknown as Pick<SimdKernels, 'encode' | 'decode'>;
    return {
      f32: new Float32Array(memory.buffer, 0, SIMD_CHUNK),
      codes: new Uint8Array(memory.buffer, SIMD_CHUNK * 4, SIMD_CHUNK),
      encode: exports.encode,
      decode: exports.decode,
    };
  } catch {
    return null;
  }
}

/** The SIMD kernels, or null when unavailable or disabled (then callers use the scalar path). */
export function simdKernels(): SimdKernels | null {
  if (!enabled) return null;
  if (kernels === undefined) kernels = instantiate();
  return kernels;
}

/**
 * Turns the WebAssembly SIMD path on or off (default on where supported); returns whether it is now active.
 * The scalar and SIMD paths give identical bytes; this exists for tests and benchmarks.
 */
export function setFp8Simd(on: boolean): boolean {
  enabled = on;
  return simdKernels() !== null;
}

const SIMD_OFFSET_CODES = SIMD_CHUNK * 4;

/** Encodes `n` (multiple of 16, <= SIMD_CHUNK) floats already in `k.f32` into `k.codes`. */
export function simdEncodeChunk(k: SimdKernels, n: number, p: SimdFormatParams): void {
  k.encode(0, SIMD_OFFSET_CODES, n, p.shift, p.roundBias, p.expAdjust, p.minNormalBits, p.subScaleBits, p.maxCode, p.nanCode, p.overflowCode, p.overflowSignMask, p.zeroSignMask);
}

/** Decodes `n` (multiple of 8, <= SIMD_CHUNK) codes already in `k.codes` into `k.f32`. */
export function simdDecodeChunk(k: SimdKernels, n: number, p: SimdFormatParams): void {
  k.decode(SIMD_OFFSET_CODES, 0, n, p.shift, p.decodeScaleBits, p.specialFrom, p.infMagnitudeCode, p.fnuzNan, 0);
}

export type { SimdFormatParams };
