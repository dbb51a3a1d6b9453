import { decodeFp8, encodeFp8, FP8_FORMATS } from '@kvq/fp8';
import { isKernelError } from '@kvq/kernels';
import { describe, expect, it } from 'vitest';
import { adjustCheckpointScales, kvScaleFromAmax, rocmFp8Plan } from './fp8-plan.js';

describe('rocmFp8Plan', () => {
  it('MI300 (gfx94x) uses FNUZ with the x2 checkpoint adjustment and a 224 maximum', () => {
    for (const name of ['gfx942:sramecc+:xnack-', 'gfx940', 'GFX941']) {
      const p = rocmFp8Plan(name);
      expect([p.kvFormat, p.fnuz, p.hardwareFp8, p.checkpointScaleFactor, p.scaleMax]).toEqual(['e4m3fnuz', true, true, 2, 224]);
    }
    expect(rocmFp8Plan('gfx942:sramecc+:xnack-').arch).toBe('gfx942');
  });

  it('MI350 (gfx950) and RDNA4 (gfx12xx) use OCP e4m3fn unchanged', () => {
    for (const name of ['gfx950', 'gfx1200', 'gfx1201']) {
      const p = rocmFp8Plan(name);
      expect([p.kvFormat, p.fnuz, p.hardwareFp8, p.checkpointScaleFactor, p.scaleMax]).toEqual(['e4m3fn', false, true, 1, 448]);
    }
  });

  it('GPUs without FP8 hardware still get a (software) OCP plan', () => {
    for (const name of ['gfx90a', 'gfx908', 'gfx1100']) {
      const p = rocmFp8Plan(name);
      expect([p.kvFormat, p.hardwareFp8, p.checkpointScaleFactor]).toEqual(['e4m3fn', false, 1]);
    }
  });

  it('rejects names that are not gfx architectures', () => {
    for (const bad of ['', 'sm_90', 'gfx', 'MI300X', 42 as unknown as string]) {
      let e: unknown;
      try {
        rocmFp8Plan(bad);
      } catch (err) {
        e = err;
      }
      expect(isKernelError(e, 'INVALID_ARGUMENT'), String(bad)).toBe(true);
    }
  });
});

describe('checkpoint scales on FNUZ', () => {
  it('doubling an e4m3fn scale makes e4m3fnuz reproduce the e4m3fn dequantized values', () => {
    const fnuz = rocmFp8Plan('gfx942');
    const sOcp = 0.0123;
    const [sFnuz] = adjustCheckpointScales([sOcp], fnuz);
    // Every value the OCP cache represents below the FNUZ maximum comes back identical (the FNUZ code of x / 2s is
    // the OCP code of x / s with the exponent bias one larger).
    let checked = 0;
    for (let i = 0; i < 4000; i++) {
      // Spread over the whole range below the FNUZ maximum, dense near zero (subnormals included).
      const t = (i - 2000) / 2000;
      const x = Math.fround(sOcp * 239.9 * Math.sign(t) * Math.abs(t) ** 3);
      if (Math.abs(x / sOcp) >= 240) continue;
      const ocp = Math.fround(decodeFp8(encodeFp8(Math.fround(x / sOcp), 'e4m3fn'), 'e4m3fn') * Math.fround(sOcp));
      const fz = Math.fround(decodeFp8(encodeFp8(Math.fround(x / sFnuz!), 'e4m3fnuz'), 'e4m3fnuz') * sFnuz!);
      // === rather than Object.is: FNUZ has no negative zero, so a tiny negative x gives +0 where OCP gives -0.
      expect(fz === ocp, `x=${x}: fnuz ${fz}, ocp ${ocp}`).toBe(true);
      checked++;
    }
    expect(checked).toBeGreaterThan(3000);
    expect(Array.from(adjustCheckpointScales([0.5, 2], rocmFp8Plan('gfx950')))).toEqual([0.5, 2]);
  });

  it('rejects non-positive or non-finite scales, naming the index', () => {
    expect(() => adjustCheckpointScales([1, 0], rocmFp8Plan('gfx942'))).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'scales[1]' }));
    expect(() => adjustCheckpointScales([Number.NaN], rocmFp8Plan('gfx942'))).toThrow(expect.objectContaining({ argument: 'scales[0]' }));
  });

  it('computed scales map amax onto 224 on FNUZ (not 240) and 448 on OCP', () => {
    const amax = 7.5;
    const fz = kvScaleFromAmax(amax, rocmFp8Plan('gfx942'));
    const ocp = kvScaleFromAmax(amax, rocmFp8Plan('gfx950'));
    expect(fz).toBe(Math.fround(amax / 224));
    expect(ocp).toBe(Math.fround(amax / 448));
    expect(FP8_FORMATS.e4m3fnuz.maxFinite).toBe(240);
    // amax lands on 224 (exactly representable), leaving headroom below 240.
    expect(decodeFp8(encodeFp8(Math.fround(amax / fz), 'e4m3fnuz'), 'e4m3fnuz')).toBe(224);
  });
});
