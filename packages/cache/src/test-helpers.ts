import { CacheError, type CacheErrorCode } from './errors.js';

/** The `code` of the CacheError `fn` throws; fails the test if it throws anything else or nothing. */
export function errorCode(fn: () => unknown): CacheErrorCode {
  try {
    fn();
  } catch (e) {
    if (e instanceof CacheError) return e.code;
    throw new Error(`expected a CacheError, got ${String(e)}`, { cause: e });
  }
  throw new Error('expected a CacheError, but nothing was thrown');
}

/** `n` consecutive token ids starting at `start`. */
export function range(start: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => start + i);
}
