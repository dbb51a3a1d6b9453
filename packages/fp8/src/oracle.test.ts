import { fixturePath } from '@kvq/fixtures';
import { describe, expect, it } from 'vitest';
import { fp8DecodeTable } from './codec.js';
import { CHUNK_INPUTS, chunkHash, ORACLE_MODES, readOracle } from './oracle.js';

const oracle = readOracle(fixturePath('oracles/fp8_cuda_oracle.json'));

/**
 * A spread of 2^24-input chunks covering every regime: +-0 and float32 subnormals (0, 128), the FP8 subnormal
 * and normal ranges of both formats (55, 59, 60, 63), 1.0 (63), the e4m3 max boundary 448..464 (67) and
 * e5m2's 57344..61440 (71), overflow (72, 100), +-inf and NaN payloads (127, 255), and the negative twins.
 */
const SPREAD = [0, 55, 59, 60, 63, 64, 67, 71, 72, 100, 127, 128, 183, 187, 191, 195, 199, 200, 255];

describe('bit-exact against CUDA (fp8_cuda_oracle.json)', () => {
  it('decode tables equal CUDA fp8->float for all 256 codes', () => {
    const e4m3 = Array.from(new Uint32Array(fp8DecodeTable('e4m3fn').buffer));
    const e5m2 = Array.from(new Uint32Array(fp8DecodeTable('e5m2').buffer));
    expect(e4m3).toEqual(oracle.decode_e4m3);
    expect(e5m2).toEqual(oracle.decode_e5m2);
  });

  const scratch = new Uint8Array(CHUNK_INPUTS);
  for (const mode of ORACLE_MODES) {
    it(`${mode.key}: ${SPREAD.length} chunks of 2^24 float32 inputs hash like CUDA's`, () => {
      const mismatched = SPREAD.filter(
        (chunk) => chunkHash(chunk, mode.format, mode.saturation, scratch) !== oracle[mode.key].sha256_chunks_2p24[chunk],
      );
      expect(mismatched).toEqual([]);
    });
  }
});
