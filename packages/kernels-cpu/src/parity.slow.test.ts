import { formatParityReport, KV_QUANT_DTYPE_LIST, runParitySuite } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend } from './backend.js';

const avail = cpuAvailability();
const isas = avail.available ? avail.cpu.isas : [];

// The kit's full-size parity set (bigger shapes, 1025-token attention for every KV dtype); minutes on 2 cores.
describe.skipIf(!process.env.KVQ_TEST_SLOW || !avail.available)('parity vs reference, full size (KVQ_TEST_SLOW=1)', () => {
  for (const isa of isas) {
    it(`${isa}: every case of parityCases({ size: 'full' })`, () => {
      const b = createBackend({ isa, threads: 2 });
      try {
        const report = runParitySuite(b, undefined, { size: 'full', supportedKvQuantDtypes: KV_QUANT_DTYPE_LIST, attentionLse: true, mixedKv: true });
        expect(report.failures, formatParityReport(report)).toEqual([]);
      } finally {
        b.dispose();
      }
    }, 600_000);
  }
});
