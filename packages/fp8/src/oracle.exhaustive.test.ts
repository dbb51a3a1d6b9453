import { createHash } from 'node:crypto';
import { fixturePath } from '@kvq/fixtures';
import { describe, expect, it } from 'vitest';
import { encodeFp8BitRange } from './codec.js';
import { CHUNK_INPUTS, ORACLE_MODES, readOracle } from './oracle.js';

// Run with `pnpm test:exhaustive` (sets KVQ_FP8_EXHAUSTIVE=1): every float32 bit pattern, all four modes.
const enabled = process.env.KVQ_FP8_EXHAUSTIVE === '1';
const oracle = readOracle(fixturePath('oracles/fp8_cuda_oracle.json'));

describe.runIf(enabled)('exhaustive: all 2^32 float32 inputs against CUDA', () => {
  const scratch = new Uint8Array(CHUNK_INPUTS);
  for (const mode of ORACLE_MODES) {
    it(
      `${mode.key}: all 256 chunks and the whole-stream hash`,
      () => {
        const whole = createHash('sha256');
        const mismatched: number[] = [];
        for (let chunk = 0; chunk < 256; chunk++) {
          encodeFp8BitRange(chunk * CHUNK_INPUTS, CHUNK_INPUTS, mode.format, { saturation: mode.saturation, out: scratch });
          whole.update(scratch);
          const hash = createHash('sha256').update(scratch).digest('hex');
          if (hash !== oracle[mode.key].sha256_chunks_2p24[chunk]) mismatched.push(chunk);
        }
        expect(mismatched).toEqual([]);
        expect(whole.digest('hex')).toBe(oracle[mode.key].sha256_all);
      },
      600_000,
    );
  }
});
