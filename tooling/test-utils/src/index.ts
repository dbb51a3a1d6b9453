/** Small, fast, seeded PRNG (mulberry32) for reproducible test data. Returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard-normal samples from a seeded PRNG (Box-Muller). */
export function seededNormal(seed: number): () => number {
  const u = seededRandom(seed);
  return () => {
    const a = Math.max(u(), 1e-12);
    return Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * u());
  };
}

/** Streams that record what a command writes, and the text so far (`io` fits `@kvq/cli`'s `CliIo`). */
export interface CapturedOutput {
  /** Pass as the command's output streams. */
  readonly io: { readonly stdout: { write(text: string): boolean }; readonly stderr: { write(text: string): boolean } };
  /** Everything written to stdout so far. */
  out(): string;
  /** Everything written to stderr so far. */
  err(): string;
}

/** Output streams for a CLI command under test: everything written to stdout / stderr is kept in memory. */
export function captureOutput(): CapturedOutput {
  let out = '';
  let err = '';
  const sink = (append: (text: string) => void) => ({
    write(text: string): boolean {
      append(text);
      return true;
    },
  });
  return {
    io: { stdout: sink((t) => (out += t)), stderr: sink((t) => (err += t)) },
    out: () => out,
    err: () => err,
  };
}
