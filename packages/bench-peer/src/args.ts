import { BenchPeerError } from './errors.js';
import type { PeerBenchmarkOptions } from './benchmark.js';
import { QUANT_SCHEMES, type SpeedModelName } from './models.js';
import { defaultPeerDir } from './peer/install.js';
import type { Realtime } from './spawn.js';

/** Usage text of the bin script (also what `kvq bench --peer --help` can print). */
export const PEER_BENCHMARK_USAGE = `Usage: node packages/bench-peer/dist/run.js [options]   (pnpm --filter @kvq/bench-peer bench:peer -- [options])

Side-by-side speed and quality of kvq against llama.cpp (node-llama-cpp 3.21.1) on identical GGUF models.

Options:
  --repeats N          measured rounds per configuration (default 3)
  --contexts A,B,C     context lengths (default 512,2048,8192)
  --decode-tokens N    tokens decoded after each prompt (default 64)
  --threads N          threads of each engine (default 2)
  --models a,b         stories260K, llama-768x12-f32, llama-768x12-f16, tinyllama-1.1b-f16, and the quantized files
                       llama-768x12-q8_0, -q4_0, -q4_k_m, -q5_k_m, -q6_k (tinyllama-1.1b-... likewise)
  --tinyllama          add the TinyLlama-1.1B shape (slow)
  --realtime MODE      auto | chrt | off (default auto: chrt -r 1 when running as root)
  --no-speed           skip the speed comparison
  --no-quality         skip quality and greedy parity
  --max-eval-tokens N  scored positions of the quality comparison (default 8192)
  --kvq-kv A,B         kvq KV types of the speed runs (default auto,fp8_e4m3,fp8_e5m2; also float32 and the dtypes
                       scaled when written: fp8_per_token_head, int8_per_token_head, int4_per_token_head, int4_g16,
                       int4_g32, int4_g64, nvfp4, q4_0, int4_g32_f16)
  --peer-kv A,B        llama.cpp KV types of the speed runs, each with flash attention off and on (default f16,bf16,q8_0,q4_0)
  --cross-engine A,B   quantized weights, same file in both engines: KL(llama.cpp || kvq) and top-1 for these schemes
                       (q8_0, q4_0, q4_k_m, q5_k_m, q6_k, or all; f32 = the dense control) on kvq-tiny and the
                       random 768x12 shape
  --cross-engine-positions N   scored positions per file (default 2048)
  --quick              harness check: contexts 128,256, 8 tokens, 1 round, 2048 eval positions
  --out DIR            report folder (default <repo>/docs); --no-write to write nothing
  --peer-dir DIR       node-llama-cpp install folder (default ${defaultPeerDir()})
  --install-peer-only  install node-llama-cpp and exit
  --render A.json[,B]  rewrite the report from results JSON files, merged (no measuring)
  -h, --help           this text`;

/** Parsed command line: benchmark options plus the bin's own flags. */
export type PeerBenchmarkArgs = PeerBenchmarkOptions & { readonly help?: boolean; readonly installOnly?: boolean; readonly render?: string };

/**
 * Parse command-line options (see {@link PEER_BENCHMARK_USAGE}) into {@link PeerBenchmarkOptions}; `kvq bench --peer`
 * can hand its remaining arguments here.
 * @throws BenchPeerError `INVALID_ARGUMENT` naming the option
 */
export function parsePeerBenchmarkArgs(argv: readonly string[]): PeerBenchmarkArgs {
  const o: Record<string, unknown> = {};
  const list = (v: string, name: string) =>
    v.split(',').map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n)) throw new BenchPeerError('INVALID_ARGUMENT', `${name}: ${JSON.stringify(x)} is not an integer`, { field: name });
      return n;
    });
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new BenchPeerError('INVALID_ARGUMENT', `${a} needs a value`, { field: a });
      return v;
    };
    const int = () => {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n)) throw new BenchPeerError('INVALID_ARGUMENT', `${a}: ${JSON.stringify(v)} is not an integer`, { field: a });
      return n;
    };
    switch (a) {
      case '--repeats':
        o.repeats = int();
        break;
      case '--contexts':
        o.contexts = list(value(), a);
        break;
      case '--decode-tokens':
        o.decodeTokens = int();
        break;
      case '--threads':
        o.threads = int();
        break;
      case '--models':
        o.models = value().split(',') as SpeedModelName[];
        break;
      case '--tinyllama':
        o.tinyllama = true;
        break;
      case '--realtime':
        o.realtime = value() as Realtime;
        break;
      case '--no-speed':
        o.speed = false;
        break;
      case '--no-quality':
        o.quality = false;
        break;
      case '--kvq-kv':
        o.kvqKv = value().split(',');
        break;
      case '--peer-kv':
        o.peerKv = value().split(',');
        break;
      case '--cross-engine': {
        const v = value();
        o.crossEngine = v === 'all' ? [...QUANT_SCHEMES] : v.split(',');
        break;
      }
      case '--cross-engine-positions':
        o.crossEnginePositions = int();
        break;
      case '--max-eval-tokens':
        o.maxEvalTokens = int();
        break;
      case '--quick':
        Object.assign(o, { contexts: [128, 256], decodeTokens: 8, repeats: 1, maxEvalTokens: 2048, greedyTokens: 128 }, { ...o });
        break;
      case '--out':
        o.outDir = value();
        break;
      case '--no-write':
        o.outDir = null;
        break;
      case '--peer-dir':
        o.peerDir = value();
        break;
      case '--render':
        o.render = value();
        break;
      case '--install-peer-only':
        o.installOnly = true;
        break;
      case '-h':
      case '--help':
        o.help = true;
        break;
      case '--':
        break;
      default:
        throw new BenchPeerError('INVALID_ARGUMENT', `unknown option ${JSON.stringify(a)} (see --help)`, { field: a });
    }
  }
  return o as PeerBenchmarkArgs;
}

