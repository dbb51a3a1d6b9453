/**
 * Running parity cases: compare a candidate backend's outputs with the reference's, element by element.
 * @module
 */
import { isKvQuantDtype, type KvQuantDtype } from '@kvq/cache';
import type { KernelBackend, KernelOpName } from '../contract.js';
import { isKernelError, KernelError } from '../errors.js';
import { createReferenceBackend } from '../reference/backend.js';
import { parityCases, type ParityCase, type ParityCaseOptions, type ParityValue, type Tolerance } from './cases.js';

/** One failed case. */
export interface ParityFailure {
  readonly op: KernelOpName;
  readonly label: string;
  /** Output name (`'out'`, `'key'`, ...), or `'(threw)'` when a backend threw. */
  readonly output: string;
  /** What went wrong, with the first mismatching index and both values. */
  readonly message: string;
  /** Number of mismatching elements. */
  readonly mismatches: number;
  /** Largest `|candidate - reference|` over the compared elements (NaN-aware; Infinity for a NaN/Inf mismatch). */
  readonly maxAbsError: number;
}

/** Result of {@link runParitySuite}. */
export interface ParityReport {
  readonly candidate: string;
  readonly reference: string;
  /** Number of cases run. */
  readonly cases: number;
  readonly passed: number;
  /**
   * Of `passed`: cases the candidate declared unsupported (write-time-scaled KV dtypes, mixed K/V caches, the lse
   * output) and refused as `UNSUPPORTED`.
   */
  readonly unsupported: number;
  readonly failures: readonly ParityFailure[];
  /** Cases and failures per op. */
  readonly byOp: Readonly<Partial<Record<KernelOpName, { cases: number; failures: number }>>>;
}

/** Options of {@link runParitySuite}. */
export interface ParitySuiteOptions extends ParityCaseOptions {
  /** Run these cases instead of `parityCases(options)`. */
  readonly cases?: readonly ParityCase[] | undefined;
  /** Override a case's tolerance (e.g. loosen attention for a GPU backend). Integer outputs stay exact. */
  readonly tolerance?: ((c: ParityCase) => Tolerance) | undefined;
  /** Stop after this many failures. Default: run everything. */
  readonly maxFailures?: number | undefined;
  /**
   * The write-time-scaled KV dtypes (`int8_per_token_head`, `nvfp4`, ...) the candidate implements. Their cases are
   * compared with the reference; for every OTHER such dtype the candidate must refuse the case with a
   * `KernelError` `UNSUPPORTED` (a crash, another error, or a silent success fails, so a backend that gains
   * kernels must list the dtype here). Default `[]` (the GPU backends refuse them all; the CPU backend lists them all).
   */
  readonly supportedKvQuantDtypes?: readonly KvQuantDtype[] | undefined;
  /**
   * Whether the candidate writes `pagedAttention`'s `lse` output. When false (default; the GPU backends), the cases
   * that ask for it must be refused with a `KernelError` `UNSUPPORTED`, as for an unsupported KV dtype.
   */
  readonly attentionLse?: boolean | undefined;
  /**
   * Whether the candidate implements caches whose V pool has another dtype than the K pool (`cache.valueDtype`). When
   * false (default; the GPU backends), the mixed-cache cases (`ParityCase.mixedKv`) must be refused with a
   * `KernelError` `UNSUPPORTED`, as for an unsupported KV dtype.
   */
  readonly mixedKv?: boolean | undefined;
}

function closeEnough(got: number, want: number, tol: Tolerance): boolean {
  if (got === want) return true;
  if (Number.isNaN(got) && Number.isNaN(want)) return true;
  if (!Number.isFinite(got) || !Number.isFinite(want)) return false;
  return Math.abs(got - want) <= tol.atol + tol.rtol * Math.abs(want);
}

/**
 * Compare one output. Float32 arrays and numbers use `tol`; integer arrays (FP8 codes, 16-bit patterns) must be
 * identical. Returns `undefined` when they match.
 */
export function compareOutput(
  name: string,
  got: ParityValue,
  want: ParityValue,
  tol: Tolerance,
): Omit<ParityFailure, 'op' | 'label'> | undefined {
  if (typeof want === 'number' || typeof got === 'number') {
    if (typeof want === 'number' && typeof got === 'number' && closeEnough(got, want, tol)) return undefined;
    return {
      output: name,
      message: `${name}: candidate ${String(got)}, reference ${String(want)}`,
      mismatches: 1,
      maxAbsError: typeof got === 'number' && typeof want === 'number' ? Math.abs(got - want) : Infinity,
    };
  }
  const kindOf = (a: ArrayBufferView): string => (a as unknown as { [Symbol.toStringTag]: string })[Symbol.toStringTag];
  if (kindOf(got) !== kindOf(want) || got.length !== want.length) {
    return {
      output: name,
      message: `${name}: candidate returned ${kindOf(got)}(${got.length}), reference ${kindOf(want)}(${want.length})`,
      mismatches: Math.max(got.length, want.length),
      maxAbsError: Infinity,
    };
  }
  const exact = !(want instanceof Float32Array);
  let mismatches = 0;
  let first = -1;
  let maxAbs = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const ok = exact ? g === w : closeEnough(g, w, tol);
    if (!Number.isNaN(g) || !Number.isNaN(w)) {
      const d = Math.abs(g - w);
      if (d > maxAbs || Number.isNaN(d)) maxAbs = Number.isNaN(d) ? Infinity : d;
    }
    if (!ok) {
      mismatches++;
      if (first < 0) first = i;
    }
  }
  if (mismatches === 0) return undefined;
  const hex = (v: number): string => (exact ? ` (0x${v.toString(16)})` : '');
  return {
    output: name,
    message:
      `${name}: ${mismatches} of ${want.length} elements differ; first at [${first}]: candidate ${got[first]}${hex(got[first]!)}, ` +
      `reference ${want[first]}${hex(want[first]!)} (tolerance rtol=${tol.rtol} atol=${tol.atol}${exact ? ', exact' : ''})`,
    mismatches,
    maxAbsError: maxAbs,
  };
}

function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return `${e.name}${code ? ` ${String(code)}` : ''}: ${e.message}`;
  }
  return String(e);
}

/**
 * Run one case on both backends and compare every output. Returns the failures (empty when it passes).
 * A backend that throws is a failure (the reference throwing means the case itself is broken).
 */
export function runParityCase(
  c: ParityCase,
  candidate: KernelBackend,
  reference: KernelBackend = createReferenceBackend(),
  tolerance: Tolerance = c.tolerance,
): ParityFailure[] {
  let want: Record<string, ParityValue>;
  try {
    want = c.run(reference);
  } catch (e) {
    return [{ op: c.op, label: c.label, output: '(threw)', message: `reference threw: ${errorText(e)}`, mismatches: 1, maxAbsError: Infinity }];
  }
  let got: Record<string, ParityValue>;
  try {
    got = c.run(candidate);
  } catch (e) {
    return [{ op: c.op, label: c.label, output: '(threw)', message: `candidate threw: ${errorText(e)}`, mismatches: 1, maxAbsError: Infinity }];
  }
  const failures: ParityFailure[] = [];
  for (const name of Object.keys(want)) {
    const f = compareOutput(name, got[name]!, want[name]!, tolerance);
    if (f) failures.push({ op: c.op, label: c.label, ...f });
  }
  return failures;
}

/** What the candidate declared it lacks for case `c` (see {@link refusal}). */
type Refusal = 'kvDtype' | 'mixedKv' | 'lse';

/** Why `c` must be refused by a candidate with `options`' declarations, or undefined when it must run. */
function refusal(c: ParityCase, options: ParitySuiteOptions, supported: readonly KvQuantDtype[]): Refusal | undefined {
  if ((c.kvDtype !== undefined && !supported.includes(c.kvDtype)) || (c.kvValueDtype !== undefined && !supported.includes(c.kvValueDtype))) return 'kvDtype';
  if (c.mixedKv === true && options.mixedKv !== true) return 'mixedKv';
  if (c.lse === true && options.attentionLse !== true) return 'lse';
  return undefined;
}

const WHAT: Record<Refusal, (c: ParityCase) => string> = {
  kvDtype: (c) => `KV dtype ${c.kvValueDtype !== undefined ? `${c.kvDtype}/${c.kvValueDtype}` : c.kvDtype}`,
  mixedKv: () => 'a mixed K/V cache',
  lse: () => 'the attention lse output',
};
const DECLARE: Record<Refusal, string> = { kvDtype: 'list it in supportedKvQuantDtypes', mixedKv: 'set mixedKv', lse: 'set attentionLse' };

/**
 * A case whose KV dtype, mixed cache or lse output the candidate does not implement: it must throw a `KernelError`
 * `UNSUPPORTED`.
 */
function expectUnsupported(c: ParityCase, candidate: KernelBackend, why: Refusal): ParityFailure[] {
  const fail = (message: string): ParityFailure[] => [
    { op: c.op, label: c.label, output: '(unsupported)', message, mismatches: 1, maxAbsError: Infinity },
  ];
  try {
    c.run(candidate);
  } catch (e) {
    if (isKernelError(e, 'UNSUPPORTED')) return [];
    return fail(`${WHAT[why](c)} is declared unsupported; expected KernelError UNSUPPORTED, got ${errorText(e)}`);
  }
  return fail(`${WHAT[why](c)} is declared unsupported but the candidate ran it: ${DECLARE[why]}`);
}

/**
 * Run the parity suite: every case of {@link parityCases} (or `options.cases`) on `candidate` and `reference`,
 * comparing outputs. Never throws for a backend's failure; inspect `report.failures` (see {@link formatParityReport}).
 *
 * @example
 * const report = runParitySuite(createCpuBackend());
 * expect(report.failures, formatParityReport(report)).toEqual([]);
 */
export function runParitySuite(
  candidate: KernelBackend,
  reference: KernelBackend = createReferenceBackend(),
  options: ParitySuiteOptions = {},
): ParityReport {
  const cases = options.cases ?? parityCases(options);
  const supported = options.supportedKvQuantDtypes ?? [];
  for (const d of supported) {
    if (!isKvQuantDtype(d)) {
      throw new KernelError('INVALID_ARGUMENT', `supportedKvQuantDtypes: ${JSON.stringify(d)} is not a write-time-scaled KV dtype`, {
        argument: 'supportedKvQuantDtypes',
      });
    }
  }
  let unsupported = 0;
  const failures: ParityFailure[] = [];
  const byOp: Partial<Record<KernelOpName, { cases: number; failures: number }>> = {};
  let passed = 0;
  let run = 0;
  for (const c of cases) {
    if (options.maxFailures !== undefined && failures.length >= options.maxFailures) break;
    run++;
    const stats = (byOp[c.op] ??= { cases: 0, failures: 0 });
    stats.cases++;
    const why = refusal(c, options, supported);
    const refuses = why !== undefined;
    const f = refuses
      ? expectUnsupported(c, candidate, why)
      : runParityCase(c, candidate, reference, options.tolerance ? options.tolerance(c) : c.tolerance);
    if (refuses && f.length === 0) unsupported++;
    if (f.length === 0) passed++;
    else {
      stats.failures++;
      failures.push(...f);
    }
  }
  return { candidate: candidate.name, reference: reference.name, cases: run, passed, unsupported, failures, byOp };
}

/** Human-readable summary of a report (per-op counts, then up to `maxLines` failures). */
export function formatParityReport(report: ParityReport, maxLines = 20): string {
  const lines = [
    `parity ${report.candidate} vs ${report.reference}: ${report.passed}/${report.cases} cases passed` +
      (report.unsupported > 0 ? ` (${report.unsupported} refused as UNSUPPORTED: KV dtypes, mixed K/V caches or the lse output not implemented)` : ''),
    ...Object.entries(report.byOp).map(([op, s]) => `  ${op}: ${s!.cases - s!.failures}/${s!.cases}`),
  ];
  for (const f of report.failures.slice(0, maxLines)) lines.push(`  FAIL ${f.label}: ${f.message}`);
  if (report.failures.length > maxLines) lines.push(`  ... and ${report.failures.length - maxLines} more failures`);
  return lines.join('\n');
}
