/** One line of a chart: a configuration's decode speed at each context. */
export interface ChartSeries {
  readonly label: string;
  readonly ours: boolean;
  readonly points: readonly { readonly x: number; readonly y: number }[];
}

/** One panel: a model. */
export interface ChartPanel {
  readonly title: string;
  readonly series: readonly ChartSeries[];
}

const OUR_COLORS = ['#1f4e9c', '#2a9d8f', '#6a4c93', '#3a86ff'];
const THEIR_COLORS = ['#e76f51', '#f4a261', '#b5651d', '#d62828', '#8d99ae', '#c9184a', '#7f5539', '#ff8fab'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A "nice" axis maximum and step (1, 2, 2.5 or 5 times a power of ten) covering `max`. */
export function niceAxis(max: number, ticks = 5): { top: number; step: number } {
  if (!(max > 0)) return { top: 1, step: 0.2 };
  const raw = max / ticks;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * pow).find((s) => s >= raw)!;
  return { top: Math.ceil(max / step) * step, step };
}

/**
 * An SVG line chart of decode tokens/s against context length (log-2 x axis), one panel per model, kvq's
 * configurations as solid lines, llama.cpp's dashed, one shared legend. Self-contained (no scripts, no fonts).
 */
export function decodeChartSvg(panels: readonly ChartPanel[], title: string): string {
  const pw = 430;
  const ph = 290;
  const m = { l: 58, r: 16, t: 34, b: 44 };
  const cols = Math.min(panels.length, 2);
  const rows = Math.ceil(panels.length / cols);
  const labels = [...new Map(panels.flatMap((p) => p.series).map((s) => [s.label, s.ours])).entries()];
  const color = new Map<string, string>();
  let o = 0;
  let t = 0;
  for (const [label, ours] of labels) color.set(label, ours ? OUR_COLORS[o++ % OUR_COLORS.length]! : THEIR_COLORS[t++ % THEIR_COLORS.length]!);
  const legendCols = 3;
  const legendRows = Math.ceil(labels.length / legendCols);
  const width = cols * pw;
  const height = 30 + rows * ph + 16 + legendRows * 20;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  panels.forEach((panel, i) => {
    const ox = (i % cols) * pw;
    const oy = 30 + Math.floor(i / cols) * ph;
    const w = pw - m.l - m.r;
    const h = ph - m.t - m.b;
    const xs = [...new Set(panel.series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
    const ymax = Math.max(0, ...panel.series.flatMap((s) => s.points.map((p) => p.y)).filter(Number.isFinite));
    const { top, step } = niceAxis(ymax);
    const lx = (x: number) => {
      if (xs.length < 2) return ox + m.l + w / 2;
      const a = Math.log2(xs[0]!);
      const b = Math.log2(xs[xs.length - 1]!);
      return ox + m.l + ((Math.log2(x) - a) / (b - a)) * w;
    };
    const ly = (y: number) => oy + m.t + h - (y / top) * h;
    out.push(`<text x="${ox + m.l + w / 2}" y="${oy + 18}" text-anchor="middle" font-size="12" font-weight="bold">${esc(panel.title)}</text>`);
    for (let y = 0; y <= top + 1e-9; y += step) {
      out.push(`<line x1="${ox + m.l}" x2="${ox + m.l + w}" y1="${ly(y).toFixed(1)}" y2="${ly(y).toFixed(1)}" stroke="#e5e5e5"/>`);
      out.push(`<text x="${ox + m.l - 6}" y="${(ly(y) + 4).toFixed(1)}" text-anchor="end" fill="#444">${Number(y.toPrecision(6))}</text>`);
    }
    for (const x of xs) {
      out.push(`<line x1="${lx(x).toFixed(1)}" x2="${lx(x).toFixed(1)}" y1="${oy + m.t}" y2="${oy + m.t + h}" stroke="#f0f0f0"/>`);
      out.push(`<text x="${lx(x).toFixed(1)}" y="${oy + m.t + h + 16}" text-anchor="middle" fill="#444">${x}</text>`);
    }
    out.push(`<rect x="${ox + m.l}" y="${oy + m.t}" width="${w}" height="${h}" fill="none" stroke="#999"/>`);
    out.push(`<text x="${ox + m.l + w / 2}" y="${oy + ph - 8}" text-anchor="middle" fill="#333">context length (tokens)</text>`);
    out.push(`<text transform="translate(${ox + 14} ${oy + m.t + h / 2}) rotate(-90)" text-anchor="middle" fill="#333">decode tokens/s</text>`);
    for (const s of panel.series) {
      const pts = s.points.filter((p) => Number.isFinite(p.y));
      if (pts.length === 0) continue;
      const c = color.get(s.label)!;
      const d = pts.map((p, k) => `${k ? 'L' : 'M'}${lx(p.x).toFixed(1)} ${ly(p.y).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="${s.ours ? 2.4 : 1.6}"${s.ours ? '' : ' stroke-dasharray="5 3"'}><title>${esc(s.label)}</title></path>`);
      for (const p of pts) {
        out.push(
          s.ours
            ? `<circle cx="${lx(p.x).toFixed(1)}" cy="${ly(p.y).toFixed(1)}" r="3" fill="${c}"><title>${esc(`${s.label} @${p.x}: ${p.y.toFixed(1)} tok/s`)}</title></circle>`
            : `<rect x="${(lx(p.x) - 2.5).toFixed(1)}" y="${(ly(p.y) - 2.5).toFixed(1)}" width="5" height="5" fill="${c}"><title>${esc(`${s.label} @${p.x}: ${p.y.toFixed(1)} tok/s`)}</title></rect>`,
        );
      }
    }
  });
  const ly0 = 30 + rows * ph + 10;
  labels.forEach(([label, ours], i) => {
    const x = 20 + (i % legendCols) * (width / legendCols);
    const y = ly0 + Math.floor(i / legendCols) * 20;
    const c = color.get(label)!;
    out.push(`<line x1="${x}" x2="${x + 26}" y1="${y}" y2="${y}" stroke="${c}" stroke-width="${ours ? 2.4 : 1.6}"${ours ? '' : ' stroke-dasharray="5 3"'}/>`);
    out.push(`<text x="${x + 32}" y="${y + 4}">${esc(label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
