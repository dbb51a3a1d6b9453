import { BenchPeerError } from '../errors.js';
import { logProbsFromMap } from '../metrics.js';
import type { PeerKv } from '../protocol.js';
import type { GenerationTiming } from '../kvq/runner.js';
import { importPeer, PEER_VERSION } from './install.js';
import type { PeerContext, PeerKvType, PeerLlama, PeerModel, PeerSequence } from './types.js';

/** The ggml type name of each llama.cpp KV type. */
const GGML_KV: Record<PeerKv, PeerKvType> = { f32: 'F32', f16: 'F16', bf16: 'BF16', q8_0: 'Q8_0', q4_0: 'Q4_0' };

/** Batch size of prompt processing (llama.cpp's default n_batch and kvq's prefill chunk). */
const PEER_BATCH = 512;

/**
 * Whether llama.cpp can run a KV type with these settings: a quantized V cache needs flash attention, and the
 * block types (q8_0, q4_0: 32 elements a block) need a head size divisible by 32. Returns the reason when not.
 */
export function peerKvUnsupported(kv: PeerKv, flashAttention: boolean, headDim: number): string | undefined {
  const quantized = kv === 'q8_0' || kv === 'q4_0';
  if (quantized && !flashAttention) return 'a quantized V cache needs flash attention';
  if (quantized && headDim % 32 !== 0) return `head_dim ${headDim} is not divisible by the 32-element ${kv} block`;
  return undefined;
}

/** One llama.cpp model + context (CPU only, prebuilt binary, `threads` threads) through node-llama-cpp. */
export class PeerRunner {
  private constructor(
    private readonly llama: PeerLlama,
    private readonly model: PeerModel,
    private readonly context: PeerContext,
    private readonly sequence: PeerSequence,
    private readonly threads: number,
  ) {}

  /**
   * @param maxTokens the longest prompt + generation it must hold (the context size)
   * @throws BenchPeerError `PEER_NOT_INSTALLED`, `INVALID_ARGUMENT` for an unsupported KV/flash-attention combination
   */
  static async open(peerDir: string, modelPath: string, kv: PeerKv, flashAttention: boolean, maxTokens: number, threads: number): Promise<PeerRunner> {
    const peer = await importPeer(peerDir);
    const llama = await peer.getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: 'error', maxThreads: threads });
    const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
    let context: PeerContext;
    try {
      context = await model.createContext({
        contextSize: maxTokens,
        batchSize: PEER_BATCH,
        sequences: 1,
        threads: { ideal: threads, min: threads },
        flashAttention,
        experimentalKvCacheKeyType: GGML_KV[kv],
        experimentalKvCacheValueType: GGML_KV[kv],
      });
    } catch (cause) {
      await model.dispose();
      await llama.dispose();
      throw new BenchPeerError('INVALID_ARGUMENT', `llama.cpp could not create a context with KV ${kv}, flash attention ${flashAttention ? 'on' : 'off'}: ${(cause as Error).message}`, { field: 'kv', cause });
    }
    if (context.flashAttention !== flashAttention) {
      throw new BenchPeerError('INVALID_ARGUMENT', `llama.cpp ran flash attention ${context.flashAttention ? 'on' : 'off'} though ${flashAttention ? 'on' : 'off'} was asked`, { field: 'flashAttention' });
    }
    return new PeerRunner(llama, model, context, context.getSequence(), threads);
  }

  /** Engine facts for the report. */
  info(): Record<string, string | number | boolean> {
    return {
      engine: 'llama.cpp',
      nodeLlamaCpp: PEER_VERSION,
      llamaCppRelease: `${this.llama.llamaCppRelease.repo}@${this.llama.llamaCppRelease.release}`,
      buildType: this.llama.buildType,
      threads: this.threads,
      contextSize: this.context.contextSize,
      batchSize: this.context.batchSize,
      flashAttention: this.context.flashAttention,
      systemInfo: this.llama.systemInfo,
    };
  }

  /** Greedy generation of `count` tokens after `prompt` on a cleared sequence (EOS does not stop it), timed. */
  async generate(prompt: readonly number[], count: number): Promise<GenerationTiming> {
    await this.sequence.clearHistory();
    const t0 = performance.now();
    const it = this.sequence.evaluate([...prompt], { temperature: 0, yieldEogToken: true });
    const tokens: number[] = [];
    let first = 0;
    try {
      for (let i = 0; i < count; i++) {
        const r = await it.next();
        if (r.done) throw new BenchPeerError('CHILD_FAILED', `llama.cpp stopped after ${tokens.length} of ${count} tokens`);
        tokens.push(r.value);
        if (i === 0) first = performance.now() - t0;
      }
    } finally {
      await it.return();
    }
    return { firstMs: first, lastMs: performance.now() - t0, tokens };
  }

  /**
   * Log-probability rows (natural log) of every position of `tokens` but the last, from llama.cpp's full
   * next-token distributions (softmax at temperature 1, no top-k/top-p/min-p), on a cleared sequence.
   */
  async logProbRows(tokens: readonly number[], vocab: number, onRow: (position: number, row: Float64Array) => void): Promise<void> {
    await this.sequence.clearHistory();
    const options = { temperature: 1, topK: 0, topP: 1, minP: 0 };
    const input = tokens.map((t, i) => (i < tokens.length - 1 ? ([t, { generateNext: { probabilities: true, options } }] as [number, { generateNext: { probabilities: boolean; options: typeof options } }]) : t));
    const out = await this.sequence.controlledEvaluate(input);
    const row = new Float64Array(vocab);
    for (let i = 0; i < tokens.length - 1; i++) {
      const p = out[i]?.next.probabilities;
      if (!p) throw new BenchPeerError('CHILD_FAILED', `llama.cpp returned no probabilities for position ${i}`);
      onRow(i, logProbsFromMap(p, row));
    }
  }

  /** Text of token ids (llama.cpp's detokenizer, special tokens dropped). */
  detokenize(tokens: readonly number[]): string {
    return this.model.detokenize(tokens, false);
  }

  async dispose(): Promise<void> {
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }
}
