/** Every way an @kvq/fp8 call can reject its input. */
export type Fp8ErrorCode =
  | 'UNKNOWN_FORMAT'
  | 'UNKNOWN_SATURATION'
  | 'INVALID_SCALE'
  | 'SCALE_SHAPE'
  | 'SHAPE_MISMATCH'
  | 'OUTPUT_TOO_SMALL'
  | 'INVALID_ARGUMENT';

/**
 * The one error type @kvq/fp8 throws. `code` is stable and machine-readable; `message` names the
 * offending argument and value.
 */
export class Fp8Error extends Error {
  /** Stable machine-readable reason. */
  readonly code: Fp8ErrorCode;

  constructor(code: Fp8ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'Fp8Error';
    this.code = code;
  }
}
