import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { EngineError } from '../errors.js';
import { ggufTensorOf } from '../testing/fixtures.js';
import { parseGguf } from './gguf.js';
import { encodeGguf, encodeGgufHeader, GgufType, writeGguf } from './gguf-writer.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kvq-gguf-writer-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('GGUF writer', () => {
  it('writes a header parseGguf reads: metadata of every type, tensor offsets aligned', () => {
    const { header } = encodeGgufHeader(
      [
        { key: 'a.u8', type: GgufType.UINT8, value: 255 },
        { key: 'a.i16', type: GgufType.INT16, value: -5 },
        { key: 'a.f64', type: GgufType.FLOAT64, value: 0.1 },
        { key: 'a.u64', type: GgufType.UINT64, value: 2n ** 40n },
        { key: 'a.i64', type: GgufType.INT64, value: -3 },
        { key: 'a.bool', type: GgufType.BOOL, value: true },
        { key: 'a.arr', type: GgufType.ARRAY, itemType: GgufType.STRING, value: ['x', 'yz'] },
      ],
      [
        { name: 't0', dims: [3], type: 'F16' },
        { name: 't1', dims: [4, 2], type: 'F32' },
      ],
      64,
    );
    const bytes = new Uint8Array(header.length + 64 + 32);
    bytes.set(header);
    const g = parseGguf(bytes, bytes.length, 'mem.gguf')!;
    expect(g.metadata.get('a.u8')).toBe(255);
    expect(g.metadata.get('a.i16')).toBe(-5);
    expect(g.metadata.get('a.f64')).toBe(0.1);
    expect(g.metadata.get('a.u64')).toBe(2n ** 40n);
    expect(g.metadata.get('a.i64')).toBe(-3n);
    expect(g.metadata.get('a.bool')).toBe(true);
    expect(g.metadata.get('a.arr')).toEqual(['x', 'yz']);
    expect(g.metadata.get('general.alignment')).toBe(64);
    expect(g.dataOffset).toBe(header.length);
    expect(g.tensors.get('t0')!.offset - g.dataOffset).toBe(0);
    expect(g.tensors.get('t1')!.offset - g.dataOffset).toBe(64);
    expect(g.tensors.get('t1')!.dims).toEqual([4, 2]);
  });

  it('rejects bad input with INVALID_ARGUMENT naming the key or tensor, and leaves no file behind', async () => {
    const err = (f: () => unknown): EngineError => {
      try {
        f();
      } catch (e) {
        return e as EngineError;
      }
      throw new Error('no error');
    };
    expect(err(() => encodeGgufHeader([{ key: 'k', type: GgufType.UINT8, value: 256 }], [])).message).toMatch(/k: expected an integer in \[0, 255\]/);
    expect(err(() => encodeGgufHeader([{ key: 'k', type: GgufType.STRING, value: 'a' }, { key: 'k', type: GgufType.STRING, value: 'b' }], [])).code).toBe('INVALID_ARGUMENT');
    expect(err(() => encodeGgufHeader([], [{ name: 't', dims: [0], type: 'F32' }])).message).toMatch(/tensor t: dimension 0/);
    expect(err(() => encodeGgufHeader([], [{ name: 't', dims: [1], type: 'Q2_K' as never }])).message).toMatch(/type "Q2_K" is not one of F32, F16, BF16, Q8_0/);
    expect(err(() => encodeGgufHeader([], [{ name: 't', dims: [48, 2], type: 'Q8_0' }])).message).toMatch(/rows of 48 elements are not a whole number of Q8_0 blocks/);
    await expect(writeGguf(join(dir, 'q.gguf'), [], [{ name: 'w', dims: [32, 2], type: 'Q8_0', data: () => new Uint8Array(67) }])).rejects.toThrow(/67 bytes given, dims \[32, 2\] need 68/);
    await expect(writeGguf(join(dir, 'q.gguf'), [], [{ name: 'w', dims: [32, 2], type: 'Q8_0', data: () => new Uint16Array(34) }])).rejects.toThrow(/Q8_0 data must be a Uint8Array/);
    expect(err(() => encodeGgufHeader([], [], 3)).field).toBe('alignment');
    const path = join(dir, 'bad.gguf');
    await expect(writeGguf(path, [], [{ name: 'w', dims: [4], type: 'F32', data: () => new Float32Array(3) }])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'w' });
    await expect(writeGguf(path, [], [{ name: 'w', dims: [4], type: 'F16', data: () => new Float32Array(4) }])).rejects.toThrow(/F16 data must be a Uint16Array/);
    await expect(stat(path)).rejects.toThrow();
    await expect(stat(`${path}.partial`)).rejects.toThrow();
  });

  it('writes the tensors where the directory says, bit for bit, in memory and on disk', async () => {
    const a = ggufTensorOf('a', { dtype: 'f32', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) });
    const b = ggufTensorOf('b', { dtype: 'bf16', shape: [5], data: Uint16Array.of(1, 2, 3, 4, 5) });
    const raw = { name: 'q', dims: [32], type: 2, data: new Uint8Array(18).fill(7) }; // one Q4_0 block, written as is
    const meta = [{ key: 'general.architecture', type: GgufType.STRING, value: 'llama' }] as const;
    const bytes = encodeGguf(meta, [a, b, raw]);
    const g = parseGguf(bytes, bytes.length, 'mem.gguf')!;
    const at = (name: string) => g.tensors.get(name)!;
    expect(new Float32Array(bytes.slice(at('a').offset, at('a').offset + 24).buffer)).toEqual(a.data);
    expect(new Uint16Array(bytes.slice(at('b').offset, at('b').offset + 10).buffer)).toEqual(b.data);
    expect(at('q')).toMatchObject({ type: 2, dims: [32] });
    expect([...bytes.subarray(at('q').offset, at('q').offset + 18)]).toEqual(Array(18).fill(7));
    for (const name of ['a', 'b', 'q']) expect((at(name).offset - g.dataOffset) % 32).toBe(0);
    const path = join(dir, 'same.gguf');
    const size = await writeGguf(path, meta, [a, b].map((t) => ({ name: t.name, dims: t.dims, type: t.type as 'F32' | 'BF16', data: () => t.data as Float32Array | Uint16Array })));
    const noRaw = encodeGguf(meta, [a, b]);
    expect(size).toBe(noRaw.length);
    expect((await stat(path)).size).toBe(noRaw.length);
    expect(Buffer.from(await readFile(path)).equals(Buffer.from(noRaw))).toBe(true);
    expect(() => encodeGguf([], [{ ...a, data: new Float32Array(5) }])).toThrow(/tensor a: 5 elements given/);
  });
});
