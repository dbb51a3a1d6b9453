/** Reasons the CLI stops. `USAGE` exits with status 2, everything else with 1. */
export type CliErrorCode = 'USAGE' | 'RUNTIME';

/** A failure the CLI reports as one line (the stack only with --verbose). */
export class CliError extends Error {
  readonly code: CliErrorCode;

  constructor(code: CliErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CliError';
    this.code = code;
  }
}

/** Process exit status for an error: 2 for usage errors, 1 otherwise. */
export function exitCodeFor(error: unknown): number {
  return error instanceof CliError && error.code === 'USAGE' ? 2 : 1;
}
