import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const csrc = (name: string): string => readFileSync(fileURLToPath(new URL(`../csrc/${name}`, import.meta.url)), 'utf8');
const GPU_SOURCES = ['common.cuh', 'wquant.cuh', 'runtime.cu', 'ops.cu', 'wquant.cu', 'kvquant.cu', 'attention.cu'];

/**
 * Lines of `text` the HIP build compiles: without `#if !KVQ_IS_HIP` blocks and the `#else` branches of
 * `#if KVQ_IS_HIP` (CUDA-only code), with comments and string literals removed.
 */
function hipVisibleLines(text: string): string[] {
  const out: string[] = [];
  const stack: { kind: 'cuda' | 'hip' | 'other'; hidden: boolean }[] = [];
  const hidden = (): boolean => stack.some((f) => f.hidden);
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (/^#\s*if/.test(t)) {
      const kind = /^#\s*if\s+!\s*KVQ_IS_HIP\b/.test(t) ? 'cuda' : /^#\s*if\s+KVQ_IS_HIP\b/.test(t) ? 'hip' : 'other';
      stack.push({ kind, hidden: kind === 'cuda' });
      continue;
    }
    if (/^#\s*el(se|if)\b/.test(t)) {
      const top = stack[stack.length - 1];
      if (top && top.kind !== 'other') top.hidden = top.kind === 'hip';
      continue;
    }
    if (/^#\s*endif\b/.test(t)) {
      stack.pop();
      continue;
    }
    if (!hidden()) out.push(line.replace(/\/\/.*$/, '').replace(/"(?:[^"\\]|\\.)*"/g, '""'));
  }
  return out;
}

describe('one kernel source for CUDA and HIP', () => {
  it('the vendor shim maps every CUDA runtime name the HIP build sees', () => {
    const vendor = csrc('vendor.h');
    const hipPart = vendor.slice(0, vendor.indexOf('#else  // NVIDIA'));
    const mapped = new Set(Array.from(hipPart.matchAll(/#define\s+(cuda\w+)/g), (m) => m[1]!));
    const used = new Map<string, string>();
    for (const f of GPU_SOURCES) {
      for (const line of hipVisibleLines(csrc(f))) {
        for (const m of line.matchAll(/\bcuda[A-Z]\w*/g)) if (!used.has(m[0])) used.set(m[0], f);
      }
    }
    expect(used.size).toBeGreaterThan(20);
    const unmapped = [...used].filter(([name]) => !mapped.has(name)).map(([name, f]) => `${name} (${f})`);
    expect(unmapped).toEqual([]);
  });

  it('CUDA-only code (cuda_fp8.h, cuBLAS) is fenced off from the HIP build', () => {
    for (const f of GPU_SOURCES) {
      const visible = hipVisibleLines(csrc(f)).join('\n');
      expect(visible, f).not.toMatch(/__nv_cvt|cuda_fp8\.h|cublasSgemm|__NV_E4M3/);
    }
  });

  it('device code uses the shim for warp-level operations, never a hard-coded width of 32', () => {
    for (const f of GPU_SOURCES) {
      const text = hipVisibleLines(csrc(f)).join('\n');
      expect(text, f).not.toMatch(/__shfl\w*\(/);
      expect(text, f).not.toMatch(/threadIdx\.x\s*[%/]\s*32\b|threadIdx\.x\s*&\s*31\b|0xffffffff/i);
    }
  });

  it('the FP8 conversions come from @kvq/kernels csrc/fp8.h, found by package resolution (included, not copied)', () => {
    expect(csrc('common.cuh')).toContain('#include "fp8.h"');
    expect(existsSync(fileURLToPath(new URL('../csrc/fp8.h', import.meta.url))), 'no copy in kernels-cuda/csrc').toBe(false);
    for (const f of ['vendor.h', 'gpu.h', 'addon.cc', ...GPU_SOURCES]) {
      expect(csrc(f), f).not.toMatch(/\b(fp8_encode_bits|fp8_decode_bits|f32_to_bf16|f32_to_f16)\s*\([^)]*\)\s*\{/);
      // No path into another package's folder: the header comes through -I<@kvq/kernels>/csrc.
      expect(csrc(f), f).not.toMatch(/#include\s*"\.\.\//);
    }
    const kernelsDir = dirname(createRequire(import.meta.url).resolve('@kvq/kernels/package.json'));
    const header = readFileSync(join(kernelsDir, 'csrc', 'fp8.h'), 'utf8');
    expect(header).toMatch(/#define KVQ_HOST_DEVICE __host__ __device__/);
    const published = JSON.parse(readFileSync(join(kernelsDir, 'package.json'), 'utf8')) as { files: string[] };
    expect(published.files).toContain('csrc');
  });

  it('addon.cc is vendor neutral (no CUDA or HIP header)', () => {
    const addon = csrc('addon.cc');
    expect(addon).not.toMatch(/#include\s*[<"](cuda|hip)/);
    expect(addon).toContain('#include "gpu.h"');
  });
});
