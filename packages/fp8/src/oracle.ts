import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { encodeFp8BitRange } from './codec.js';
import type { Fp8Format, Saturation } from './formats.js';

/** The oracle's four encode modes, keyed as in fp8_cuda_oracle.json. */
export const ORACLE_MODES = [
  { key: 'e4m3_satfinite', format: 'e4m3fn', saturation: 'satfinite' },
  { key: 'e4m3_nosat', format: 'e4m3fn', saturation: 'nosat' },
  { key: 'e5m2_satfinite', format: 'e5m2', saturation: 'satfinite' },
  { key: 'e5m2_nosat', format: 'e5m2', saturation: 'nosat' },
] as const satisfies readonly { key: string; format: Fp8Format; saturation: Saturation }[];

/** Shape of the CUDA oracle (`oracles/fp8_cuda_oracle.json` of @kvq/fixtures; layout in docs/spec/fp8-formats.md). */
export interface CudaOracle {
  decode_e4m3: number[];
  decode_e5m2: number[];
  e4m3_satfinite: { sha256_all: string; sha256_chunks_2p24: string[] };
  e4m3_nosat: { sha256_all: string; sha256_chunks_2p24: string[] };
  e5m2_satfinite: { sha256_all: string; sha256_chunks_2p24: string[] };
  e5m2_nosat: { sha256_all: string; sha256_chunks_2p24: string[] };
}

export function readOracle(path: string): CudaOracle {
  return JSON.parse(readFileSync(path, 'utf8')) as CudaOracle;
}

export const CHUNK_INPUTS = 2 ** 24;

/** SHA-256 (hex) of our encoding of float32 bit patterns chunk*2^24 .. (chunk+1)*2^24-1. */
export function chunkHash(chunk: number, format: Fp8Format, saturation: Saturation, scratch: Uint8Array): string {
  encodeFp8BitRange(chunk * CHUNK_INPUTS, CHUNK_INPUTS, format, { saturation, out: scratch });
  return createHash('sha256').update(scratch).digest('hex');
}
