import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { MemorySource } from '../io/source.js';
import { ggufTensorOf } from '../testing/fixtures.js';
import { encodeGguf } from './gguf-writer.js';
import { engineErrorOf, engineErrorOfAsync, testData, tempDir } from '../testing/fixtures.js';
import type { Tensor } from '../tensor.js';
import { GgufValueType, parseGguf, readGgufHeader } from './gguf.js';
import { llama2cLayout, parseLlama2cHeader, parseLlama2cTokenizer, readLlama2cHeader } from './llama2c.js';
import { encodeSafetensors, parseSafetensorsHeader, readSafetensorsHeader, writeSafetensors } from './safetensors.js';

const f32 = (values: number[], shape: number[]): Tensor => ({ dtype: 'f32', shape, data: Float32Array.from(values) });
const bf16 = (bits: number[], shape: number[]): Tensor => ({ dtype: 'bf16', shape, data: Uint16Array.from(bits) });

function rawSafetensors(header: unknown, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

describe('safetensors', () => {
  it('writes a file the parser reads back (aligned, contiguous, header padded to 8 bytes)', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const tensors = new Map<string, Tensor>([
        ['b', bf16([0x3f80, 0x4000, 0xbf80], [3])],
        ['a', f32([1, 2, 3, 4, 5, 6], [2, 3])],
      ]);
      const path = join(dir, 'x.safetensors');
      await writeSafetensors(path, tensors, { format: 'pt' });
      const bytes = readFileSync(path);
      expect(Buffer.from(encodeSafetensors(tensors, { format: 'pt' })).equals(bytes)).toBe(true);
      const header = parseSafetensorsHeader(bytes, bytes.length, path);
      expect((header.dataOffset - 8) % 8).toBe(0);
      expect(header.metadata).toEqual({ format: 'pt' });
      const a = header.tensors.get('a')!;
      expect(a).toMatchObject({ dtype: 'F32', shape: [2, 3] });
      expect(a.begin % 4).toBe(0);
      expect(Array.from(new Float32Array(bytes.buffer.slice(bytes.byteOffset + a.begin, bytes.byteOffset + a.end)))).toEqual([1, 2, 3, 4, 5, 6]);
      expect(header.tensors.get('b')).toMatchObject({ dtype: 'BF16', shape: [3] });
      expect((await readSafetensorsHeader(new MemorySource(bytes, path))).tensors.size).toBe(2);
    } finally {
      await cleanup();
    }
  });

  it.each([
    ['a header length beyond the file', () => {
      const b = rawSafetensors({}, 0);
      new DataView(b.buffer).setBigUint64(0, 1000n, true);
      return b;
    }, 'TRUNCATED'],
    ['a header that is not JSON', () => {
      const b = rawSafetensors({}, 0);
      b[8] = 0x5b; // '[' → '[}'
      return b;
    }, 'MALFORMED'],
    ['data_offsets that disagree with dtype and shape', () => rawSafetensors({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4), 'MALFORMED'],
    ['data past the end of the file', () => rawSafetensors({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 4), 'TRUNCATED'],
    ['overlapping tensors', () =>
      rawSafetensors({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, v: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8), 'MALFORMED'],
    ['a gap between tensors', () => rawSafetensors({ w: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8), 'MALFORMED'],
    ['a negative dimension', () => rawSafetensors({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), 'MALFORMED'],
    ['a file shorter than 8 bytes', () => new Uint8Array(5), 'TRUNCATED'],
  ] as const)('rejects %s with a typed error naming the file', (_what, make, code) => {
    const bytes = make();
    const e = engineErrorOf(() => parseSafetensorsHeader(bytes, bytes.length, 'bad.safetensors'));
    expect(e.code).toBe(code);
    expect(e.message).toContain('bad.safetensors');
  });

  it('parses unknown dtypes without validating their size (they are rejected only when loaded as weights)', () => {
    const bytes = rawSafetensors({ w: { dtype: 'F4_E2M1', shape: [2], data_offsets: [0, 1] } }, 1);
    expect(parseSafetensorsHeader(bytes, bytes.length, 'x').tensors.get('w')?.dtype).toBe('F4_E2M1');
  });
});

describe('GGUF', () => {
  it('reads the header of stories260K.gguf', async () => {
    const bytes = readFileSync(testData.storiesGguf);
    const gguf = await readGgufHeader(new MemorySource(bytes, 'stories260K.gguf'));
    expect(gguf.version).toBe(3);
    expect(gguf.metadata.get('general.architecture')).toBe('llama');
    expect(gguf.metadata.get('llama.rope.dimension_count')).toBe(8);
    expect((gguf.metadata.get('tokenizer.ggml.tokens') as string[])[1]).toBe('<s>');
    expect(gguf.tensors.size).toBe(48);
    expect(gguf.tensors.get('blk.0.attn_k.weight')).toMatchObject({ dims: [64, 32], type: 0, byteLength: 64 * 32 * 4 });
    expect(gguf.dataOffset % gguf.alignment).toBe(0);
  });

  it('reads what the test writer writes, including arrays and typed values', () => {
    const bytes = encodeGguf(
      [
        { key: 'general.architecture', type: GgufValueType.STRING, value: 'llama' },
        { key: 'a.u32', type: GgufValueType.UINT32, value: 7 },
        { key: 'a.f32', type: GgufValueType.FLOAT32, value: 0.5 },
        { key: 'a.flag', type: GgufValueType.BOOL, value: true },
        { key: 'a.list', type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value: ['x', 'ÿ'] },
      ],
      [ggufTensorOf('t', bf16([1, 2, 3, 4, 5, 6], [2, 3]))],
    );
    const gguf = parseGguf(bytes, bytes.length, 'w.gguf')!;
    expect(gguf.metadata.get('a.u32')).toBe(7);
    expect(gguf.metadata.get('a.f32')).toBe(0.5);
    expect(gguf.metadata.get('a.flag')).toBe(true);
    expect(gguf.metadata.get('a.list')).toEqual(['x', 'ÿ']);
    expect(gguf.tensors.get('t')).toMatchObject({ dims: [3, 2], type: 30, byteLength: 12 });
  });

  it('rejects bad magic, version 1, and truncation with typed errors', async () => {
    const bytes = new Uint8Array(readFileSync(testData.storiesGguf));
    const magic = bytes.slice();
    magic[0] = 0x58;
    expect(engineErrorOf(() => parseGguf(magic, magic.length, 'm.gguf')).code).toBe('MALFORMED');
    const v1 = bytes.slice();
    v1[4] = 1;
    expect(engineErrorOf(() => parseGguf(v1, v1.length, 'v1.gguf')).code).toBe('UNSUPPORTED_FORMAT');
    for (const cut of [3, 20, 1000, 14000, 200_000]) {
      const e = await engineErrorOfAsync(readGgufHeader(new MemorySource(bytes.subarray(0, cut), 'cut.gguf')));
      expect(e.code).toBe('TRUNCATED');
      expect(e.message).toContain('cut.gguf');
    }
  });

  it('rejects absurd counts without allocating them', () => {
    const bytes = encodeGguf([{ key: 'x', type: GgufValueType.ARRAY, itemType: GgufValueType.UINT32, value: [1, 2] }], []);
    // The array count sits after magic, version, 2 counts, the key (8 + 1) and the two type fields.
    new DataView(bytes.buffer).setBigUint64(4 + 4 + 16 + 9 + 4 + 4, 1n << 60n, true);
    const e = engineErrorOf(() => parseGguf(bytes, bytes.length, 'huge.gguf'));
    expect(e.code).toBe('TRUNCATED');
    expect(e.message).toContain('1152921504606846976');
    expect(e.message).toContain('x count');
  });
});

describe('llama2.c', () => {
  it('parses the legacy header and checks the exact file size', async () => {
    const bytes = readFileSync(testData.storiesBin);
    const { header, slots } = await readLlama2cHeader(new MemorySource(bytes, 'stories260K.bin'));
    expect(header).toMatchObject({ version: 0, dim: 64, hiddenDim: 172, numLayers: 5, numHeads: 8, numKvHeads: 4, vocabSize: 512, seqLen: 512, sharedClassifier: true });
    expect(llama2cLayout(header).fileSize).toBe(bytes.length);
    expect(slots.find((s) => s.name === 'model.layers.0.self_attn.k_proj.weight')?.shape).toEqual([32, 64]);
    const short = await engineErrorOfAsync(readLlama2cHeader(new MemorySource(bytes.subarray(0, bytes.length - 4), 's.bin')));
    expect(short.code).toBe('TRUNCATED');
    const long = await engineErrorOfAsync(readLlama2cHeader(new MemorySource(new Uint8Array(bytes.length + 4), 'l.bin')));
    expect(long.code).toBe('MALFORMED');
  });

  it('rejects version-2 (int8) checkpoints and impossible headers', () => {
    const v2 = new Uint8Array(256);
    const dv = new DataView(v2.buffer);
    dv.setUint32(0, 0x616b3432, true);
    dv.setInt32(4, 2, true);
    expect(engineErrorOf(() => parseLlama2cHeader(v2, 256, 'q.bin')).code).toBe('UNSUPPORTED_FORMAT');
    const bad = new Uint8Array(28);
    new DataView(bad.buffer).setInt32(0, -5, true);
    const e = engineErrorOf(() => parseLlama2cHeader(bad, 28, 'bad.bin'));
    expect(e.code).toBe('MALFORMED');
    expect(e.field).toBe('dim');
  });

  it('parses tok512.bin and rejects truncated tokenizer files', () => {
    const bytes = readFileSync(testData.storiesTok);
    const tok = parseLlama2cTokenizer(bytes, 'tok512.bin', 512);
    expect(tok.pieces).toHaveLength(512);
    expect(tok.pieces[1]).toBe('\n<s>\n');
    expect(tok.pieces[259]).toBe(' t');
    expect(engineErrorOf(() => parseLlama2cTokenizer(bytes.subarray(0, 3000), 't.bin', 512)).code).toBe('TRUNCATED');
    expect(engineErrorOf(() => parseLlama2cTokenizer(bytes, 't.bin', 100)).code).toBe('MALFORMED');
  });
});
