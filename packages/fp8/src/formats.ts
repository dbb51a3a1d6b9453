import { Fp8Error } from './errors.js';

/**
 * The four FP8 formats kvq encodes bit-exactly.
 * - `e4m3fn`: OCP E4M3 (CUDA `__NV_E4M3`, torch `float8_e4m3fn`), what `fp8`/`fp8_e4m3` mean.
 * - `e5m2`: OCP E5M2 (CUDA `__NV_E5M2`), `fp8_e5m2`.
 * - `e4m3fnuz` / `e5m2fnuz`: the AMD MI300 (gfx94x) variants: bias one higher, no -0, no inf, NaN = 0x80.
 * @see docs/spec/fp8-formats.md
 */
export type Fp8Format = 'e4m3fn' | 'e5m2' | 'e4m3fnuz' | 'e5m2fnuz';

/** All FP8 formats, in a stable order. */
export const FP8_FORMAT_NAMES: readonly Fp8Format[] = ['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'];

/**
 * What happens to values beyond the largest finite magnitude.
 * - `satfinite` (default, what vLLM uses): clamp to +-max finite (also +-inf).
 * - `nosat`: e4m3fn -> NaN keeping the sign (0x7F/0xFF), e5m2 -> +-inf (0x7C/0xFC), fnuz -> NaN (0x80).
 */
export type Saturation = 'satfinite' | 'nosat';

/** Constants of one FP8 format. Values are numbers (exact in float32); codes are bytes. */
export interface Fp8FormatInfo {
  readonly name: Fp8Format;
  readonly exponentBits: number;
  readonly mantissaBits: number;
  /** Exponent bias: value = 2^(e - bias) * (1 + m / 2^mantissaBits) for normal codes. */
  readonly bias: number;
  /** Largest finite magnitude (448, 57344, 240, 57344). */
  readonly maxFinite: number;
  /** Code of +maxFinite (0x7E, 0x7B, 0x7F, 0x7F). */
  readonly maxFiniteCode: number;
  /** Smallest positive normal value. */
  readonly minNormal: number;
  /** Smallest positive subnormal value. */
  readonly minSubnormal: number;
  /** Canonical NaN code produced by the encoder (0x7F for OCP formats, 0x80 for FNUZ). */
  readonly nanCode: number;
  /** Every code that decodes to NaN. */
  readonly nanCodes: readonly number[];
  /** Codes of +inf and -inf, or null when the format has no infinity. */
  readonly infCodes: { readonly positive: number; readonly negative: number } | null;
  /** Whether 0x80 means -0 (OCP) rather than NaN (FNUZ). */
  readonly hasNegativeZero: boolean;
  /** Whether the format is an AMD FNUZ variant (same bit pattern = half the OCP value for e4m3). */
  readonly fnuz: boolean;
  /**
   * Effective max used when computing scales from amax: `maxFinite`, except e4m3fnuz where vLLM uses 224
   * (`get_fp8_min_max`: "Using the default value (240.0) ... will cause accuracy issue").
   */
  readonly scaleMax: number;
}

function info(
  name: Fp8Format,
  exponentBits: number,
  mantissaBits: number,
  bias: number,
  maxFiniteCode: number,
  fnuz: boolean,
  scaleMax?: number,
): Fp8FormatInfo {
  const eMax = maxFiniteCode >> mantissaBits;
  const mMax = maxFiniteCode & ((1 << mantissaBits) - 1);
  const maxFinite = 2 ** (eMax - bias) * (1 + mMax / 2 ** mantissaBits);
  const nanCodes: number[] = [];
  let infCodes: Fp8FormatInfo['infCodes'] = null;
  if (fnuz) {
    nanCodes.push(0x80);
  } else if (exponentBits === 4) {
    nanCodes.push(0x7f, 0xff);
  } else {
    nanCodes.push(0x7d, 0x7e, 0x7f, 0xfd, 0xfe, 0xff);
    infCodes = { positive: 0x7c, negative: 0xfc };
  }
  return Object.freeze({
    name,
    exponentBits,
    mantissaBits,
    bias,
    maxFinite,
    maxFiniteCode,
    minNormal: 2 ** (1 - bias),
    minSubnormal: 2 ** (1 - bias - mantissaBits),
    nanCode: fnuz ? 0x80 : 0x7f,
    nanCodes: Object.freeze(nanCodes),
    infCodes,
    hasNegativeZero: !fnuz,
    fnuz,
    scaleMax: scaleMax ?? maxFinite,
  });
}

/**
 * Constants of every format.
 *
 * | format | bias | max | min normal | min subnormal | NaN | inf |
 * |---|---|---|---|---|---|---|
 * | e4m3fn | 7 | 448 (0x7E) | 2^-6 | 2^-9 | 0x7F, 0xFF | none |
 * | e5m2 | 15 | 57344 (0x7B) | 2^-14 | 2^-16 | 0x7D-0x7F, 0xFD-0xFF | 0x7C, 0xFC |
 * | e4m3fnuz | 8 | 240 (0x7F) | 2^-7 | 2^-10 | 0x80 | none |
 * | e5m2fnuz | 16 | 57344 (0x7F) | 2^-15 | 2^-17 | 0x80 | none |
 */
export const FP8_FORMATS: Readonly<Record<Fp8Format, Fp8FormatInfo>> = Object.freeze({
  e4m3fn: info('e4m3fn', 4, 3, 7, 0x7e, false),
  e5m2: info('e5m2', 5, 2, 15, 0x7b, false),
  e4m3fnuz: info('e4m3fnuz', 4, 3, 8, 0x7f, true, 224),
  e5m2fnuz: info('e5m2fnuz', 5, 2, 16, 0x7f, true),
});

/** Look up a format's constants; throws `Fp8Error('UNKNOWN_FORMAT')` for anything else. */
export function formatInfo(format: Fp8Format): Fp8FormatInfo {
  const found = (FP8_FORMATS as Record<string, Fp8FormatInfo | undefined>)[format];
  if (!found) {
    throw new Fp8Error(
      'UNKNOWN_FORMAT',
      `unknown FP8 format ${JSON.stringify(format)}; expected one of ${FP8_FORMAT_NAMES.join(', ')}`,
    );
  }
  return found;
}

/** Validates a saturation mode (default `satfinite`). */
export function checkSaturation(saturation: Saturation | undefined): Saturation {
  if (saturation === undefined) return 'satfinite';
  if (saturation !== 'satfinite' && saturation !== 'nosat') {
    throw new Fp8Error(
      'UNKNOWN_SATURATION',
      `unknown saturation mode ${JSON.stringify(saturation)}; expected "satfinite" or "nosat"`,
    );
  }
  return saturation;
}
