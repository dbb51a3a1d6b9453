/** Per-layer relative RMS quantization error of K and V. */
export interface LayerErrorRow {
  readonly layer: number;
  readonly k_rel_rms: number;
  readonly v_rel_rms: number;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A self-contained SVG bar chart: K and V relative RMS error (percent) per layer. */
export function layerErrorSvg(rows: readonly LayerErrorRow[], title: string): string {
  const width = 640;
  const height = 360;
  const left = 60;
  const right = 20;
  const top = 40;
  const bottom = 50;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const max = Math.max(1e-9, ...rows.flatMap((r) => [r.k_rel_rms, r.v_rel_rms])) * 100;
  const step = niceStep(max / 5);
  const yMax = Math.ceil(max / step) * step;
  const y = (v: number) => top + plotH - (v / yMax) * plotH;
  const group = plotW / Math.max(rows.length, 1);
  const bar = Math.min(28, group / 3);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
  for (let v = 0; v <= yMax + 1e-12; v += step) {
    parts.push(`<line x1="${left}" x2="${width - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${fmt(v)}%</text>`);
  }
  rows.forEach((r, i) => {
    const cx = left + group * (i + 0.5);
    const k = r.k_rel_rms * 100;
    const v = r.v_rel_rms * 100;
    parts.push(`<rect x="${(cx - bar).toFixed(1)}" y="${y(k).toFixed(1)}" width="${bar.toFixed(1)}" height="${(top + plotH - y(k)).toFixed(1)}" fill="#3b6fb6"><title>layer ${r.layer} K ${fmt(k)}%</title></rect>`);
    parts.push(`<rect x="${cx.toFixed(1)}" y="${y(v).toFixed(1)}" width="${bar.toFixed(1)}" height="${(top + plotH - y(v)).toFixed(1)}" fill="#e08a2c"><title>layer ${r.layer} V ${fmt(v)}%</title></rect>`);
    parts.push(`<text x="${cx.toFixed(1)}" y="${top + plotH + 16}" text-anchor="middle">${r.layer}</text>`);
  });
  parts.push(`<line x1="${left}" x2="${width - right}" y1="${top + plotH}" y2="${top + plotH}" stroke="black"/>`);
  parts.push(`<text x="${left + plotW / 2}" y="${height - 12}" text-anchor="middle">layer</text>`);
  parts.push(`<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">relative RMS error</text>`);
  parts.push(`<rect x="${width - right - 110}" y="${top}" width="10" height="10" fill="#3b6fb6"/><text x="${width - right - 95}" y="${top + 9}">K</text>`);
  parts.push(`<rect x="${width - right - 60}" y="${top}" width="10" height="10" fill="#e08a2c"/><text x="${width - right - 45}" y="${top + 9}">V</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function niceStep(x: number): number {
  const p = 10 ** Math.floor(Math.log10(x));
  const m = x / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

function fmt(v: number): string {
  return v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toPrecision(2);
}
