/** Where progress goes: a writable with an optional TTY flag (stderr). */
export interface ProgressSink {
  write(text: string): unknown;
  isTTY?: boolean;
}

/**
 * A one-line progress bar on a TTY (redrawn with `\r`, at most every 100 ms); nothing at all when the sink is not a
 * terminal, so piped output and logs stay clean.
 */
export class ProgressBar {
  private last = 0;
  private drawn = false;

  constructor(
    private readonly sink: ProgressSink | undefined,
    private readonly label: string,
    private readonly format: (done: number, total: number) => string = (d, t) => `${d}/${t}`,
  ) {}

  /** Updates the bar to `done` of `total`. */
  update(done: number, total: number): void {
    if (!this.sink?.isTTY) return;
    const now = Date.now();
    if (done < total && now - this.last < 100) return;
    this.last = now;
    const width = 30;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const filled = Math.round(frac * width);
    this.sink.write(`\r${this.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${this.format(done, total)}\x1b[K`);
    this.drawn = true;
  }

  /** Clears the line (if anything was drawn). */
  done(): void {
    if (this.drawn && this.sink?.isTTY) this.sink.write('\r\x1b[K');
    this.drawn = false;
  }
}

/** Human-readable bytes: 1.5 MiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}
