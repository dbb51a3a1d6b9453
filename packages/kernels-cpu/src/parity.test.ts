import { formatParityReport, KV_QUANT_DTYPE_LIST, runBadInputSuite, runParitySuite } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend } from './backend.js';

const avail = cpuAvailability();
const isas = avail.available ? avail.cpu.isas : [];

describe('native CPU backend loads', () => {
  it.skipIf(process.env.KVQ_SKIP_NATIVE === '1')('the addon is built and loads', () => {
    expect(avail.available ? 'available' : avail.reason).toBe('available');
  });
});

for (const isa of isas) {
  describe(`parity vs reference: ${isa}`, () => {
    it('every op on every quick parity case', () => {
      const b = createBackend({ isa, threads: 2 });
      try {
        // Every KV dtype, the write-time-scaled ones included (csrc/kvquant_impl.h): bytes identical, attention in tolerance.
        const report = runParitySuite(b, undefined, { supportedKvQuantDtypes: KV_QUANT_DTYPE_LIST, attentionLse: true, mixedKv: true });
        expect(report.failures, formatParityReport(report)).toEqual([]);
      } finally {
        b.dispose();
      }
    });
    it('bad input is rejected with the shared KernelErrors', () => {
      const b = createBackend({ isa, threads: 2 });
      try {
        expect(runBadInputSuite(b)).toEqual([]);
      } finally {
        b.dispose();
      }
    });
  });
}
