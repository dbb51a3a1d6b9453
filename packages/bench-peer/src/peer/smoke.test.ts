import { fixturePath } from '@kvq/fixtures';
import { describe, expect, it } from 'vitest';

import { KvqRunner } from '../kvq/runner.js';
import { QualityAccumulator } from '../metrics.js';
import { defaultPeerDir, isPeerInstalled } from './install.js';
import { PeerRunner } from './runner.js';

// Only where node-llama-cpp has been installed by the benchmark's own command (never by the default install).
const installed = isPeerInstalled();
const stories = fixturePath('models/stories260K/stories260K.gguf');
if (!installed) {
  console.warn(`[bench-peer] skipping the llama.cpp smoke test: node-llama-cpp is not installed in ${defaultPeerDir()} (run \`pnpm --filter @kvq/bench-peer peer:install\`)`);
}

describe.skipIf(!installed)('llama.cpp through node-llama-cpp vs kvq on stories260K (smoke)', () => {
  it('same greedy tokens from BOS, and next-token distributions that agree', async () => {
    const peer = await PeerRunner.open(defaultPeerDir(), stories, 'f32', false, 256, 2);
    const kvq = await KvqRunner.open(stories, 'auto', 256);
    try {
      expect(peer.info()).toMatchObject({ engine: 'llama.cpp', nodeLlamaCpp: '3.21.1', buildType: 'prebuilt', flashAttention: false });
      const theirs = await peer.generate([1], 48);
      const ours = kvq.generate([1], 48);
      expect(ours.tokens).toEqual(theirs.tokens);
      expect(peer.detokenize(theirs.tokens)).toMatch(/^Once upon a time/);

      const doc = [1, ...theirs.tokens];
      const vocab = 512;
      const rows: Float64Array[] = [];
      await kvq.logProbRows(doc, (_pos, row) => rows.push(Float64Array.from(row)));
      const acc = new QualityAccumulator();
      await peer.logProbRows(doc, vocab, (pos, row) => acc.add(rows[pos]!, row, doc[pos + 1]!, vocab));
      const r = acc.result();
      expect(r.tokens).toBe(doc.length - 1);
      expect(r.top1Agreement).toBe(1);
      expect(r.klMean).toBeLessThan(1e-5);
    } finally {
      await peer.dispose();
      kvq.dispose();
    }
  });
});
