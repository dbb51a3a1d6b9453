// The parts of node-llama-cpp 3.21.1's API this harness calls, declared once (the package is not a dependency of
// the workspace: it is installed on demand into a cache folder, see ./install.ts). Shapes from its
// dist/index.d.ts; only what is used here.

/** `LlamaLogLevel` values of node-llama-cpp. */
type PeerLogLevel = 'disabled' | 'fatal' | 'error' | 'warn' | 'info' | 'log' | 'debug';

/** node-llama-cpp's `getLlama` options used here. */
interface PeerGetLlamaOptions {
  gpu: false;
  build: 'never';
  usePrebuiltBinaries: true;
  skipDownload: true;
  progressLogs: false;
  logLevel: PeerLogLevel;
  maxThreads: number;
}

/** The `Llama` object (bindings). */
export interface PeerLlama {
  readonly cpuMathCores: number;
  readonly buildType: 'localBuild' | 'prebuilt';
  readonly llamaCppRelease: { readonly repo: string; readonly release: string };
  readonly systemInfo: string;
  loadModel(options: { modelPath: string; gpuLayers: 0; useMmap?: boolean }): Promise<PeerModel>;
  dispose(): Promise<void>;
}

/** `LlamaModel`. */
export interface PeerModel {
  readonly trainContextSize: number;
  readonly size: number;
  readonly tokens: { readonly bos: number | null; readonly eos: number | null };
  tokenize(text: string, specialTokens?: boolean): number[];
  detokenize(tokens: readonly number[], specialTokens?: boolean): string;
  createContext(options: PeerContextOptions): Promise<PeerContext>;
  dispose(): Promise<void>;
}

/** ggml type names accepted for the KV cache. */
export type PeerKvType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0';

/** `LlamaContextOptions` used here. */
interface PeerContextOptions {
  contextSize: number;
  batchSize: number;
  sequences: 1;
  threads: { ideal: number; min: number };
  flashAttention: boolean;
  experimentalKvCacheKeyType: PeerKvType;
  experimentalKvCacheValueType: PeerKvType;
}

/** `LlamaContext`. */
export interface PeerContext {
  readonly contextSize: number;
  readonly batchSize: number;
  readonly flashAttention: boolean;
  readonly stateSize: number;
  getSequence(): PeerSequence;
  dispose(): Promise<void>;
}

/** Sampling options of `controlledEvaluate`'s `generateNext`. */
interface PeerSampleOptions {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
}

/** `LlamaContextSequence`. */
export interface PeerSequence {
  readonly nextTokenIndex: number;
  clearHistory(): Promise<void>;
  evaluate(tokens: number[], options: { temperature: number; yieldEogToken: boolean }): AsyncGenerator<number, void, void | number | number[]>;
  controlledEvaluate(
    input: (number | [number, { generateNext: { probabilities?: boolean; token?: boolean; options?: PeerSampleOptions } }])[],
  ): Promise<(undefined | { next: { token?: number | null; probabilities?: Map<number, number> } })[]>;
}

/** The module namespace of `node-llama-cpp`. */
export interface PeerModule {
  getLlama(options: PeerGetLlamaOptions): Promise<PeerLlama>;
}
