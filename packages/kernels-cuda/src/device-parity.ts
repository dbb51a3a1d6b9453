/**
 * The parity suite on device arrays: a {@link KernelBackend} view of a GPU backend that runs every op with its
 * activations in device memory (`DeviceMemory`: written before the op, read back after) and its KV caches given to
 * the device (`attachCache`, detached after the op so the host sees the pools). Running `@kvq/kernels/testing`'s
 * parity suite on it proves each op gives the same results on device arrays as the reference on host arrays: the
 * path the engine's device-resident decode takes.
 * @module
 */
import type { DeviceArray, KernelBackend, KernelOpName, KvLayerCache } from '@kvq/kernels';
import type { GpuBackend } from './backend.js';

/** The activation fields of each op (the contract's `Activation` arguments). */
const ACTIVATION_FIELDS: Readonly<Partial<Record<KernelOpName, readonly string[]>>> = {
  linear: ['x', 'out'],
  rmsNorm: ['x', 'out'],
  add: ['a', 'b', 'out'],
  siluAndMul: ['gate', 'up', 'out'],
  geluTanhAndMul: ['gate', 'up', 'out'],
  embedding: ['out'],
  rope: ['query', 'key'],
  softmax: ['x', 'out'],
  argmax: ['x'],
  reshapeAndCache: ['key', 'value'],
  pagedAttention: ['query', 'out'],
};

/**
 * `gpu` with every op's activations on device arrays and its cache attached for the op (see the module).
 * Aliased arguments (the same array twice, e.g. an in-place RMSNorm) become one device array.
 */
export function onDeviceArrays(gpu: GpuBackend): KernelBackend {
  const mem = gpu.memory;
  const view: Record<string, unknown> = { name: `${gpu.name}+device-arrays`, info: gpu.info };
  for (const op of Object.keys(ACTIVATION_FIELDS) as KernelOpName[]) {
    const fields = ACTIVATION_FIELDS[op]!;
    view[op] = (args: Record<string, unknown>) => {
      const placed = new Map<Float32Array, DeviceArray>();
      const call: Record<string, unknown> = { ...args };
      for (const f of fields) {
        const host = args[f];
        if (!(host instanceof Float32Array) || host.length === 0) continue;
        let d = placed.get(host);
        if (!d) {
          d = mem.alloc('f32', host.length);
          mem.write(d, host);
          placed.set(host, d);
        }
        call[f] = d;
      }
      const cache = args.cache as KvLayerCache | undefined;
      if (cache) mem.attachCache(cache);
      try {
        return (gpu[op] as (a: unknown) => unknown).call(gpu, call);
      } finally {
        if (cache) mem.detachCache(cache);
        for (const [host, d] of placed) {
          mem.read(d, host);
          mem.free(d);
        }
      }
    };
  }
  // The ops without activation arguments run as they are.
  for (const op of ['amaxTensor', 'amaxPerHead', 'quantizeFp8', 'dequantizeFp8'] as const) {
    view[op] = (args: unknown) => (gpu[op] as (a: unknown) => unknown).call(gpu, args);
  }
  return view as unknown as KernelBackend;
}
