import { EngineError, describeValue } from '../errors.js';
import type { GgufMetadata } from '../formats/gguf.js';
import { LLAMA3_PATTERN, QWEN2_PATTERN } from './regex.js';
import { sentencePieceTokenizerJson, templateProcessing, TokenType } from './sentencepiece.js';
import type { TokenizerConfigJson, TokenizerJson } from './tokenizer.js';

/** Pre-tokenizer patterns for `tokenizer.ggml.pre` values (llama.cpp `llama-vocab.cpp`), `undefined` = GPT-2's. */
const PRE_TOKENIZERS: Record<string, { pattern: string | undefined; ignoreMerges: boolean }> = {
  'llama-bpe': { pattern: LLAMA3_PATTERN, ignoreMerges: true },
  llama3: { pattern: LLAMA3_PATTERN, ignoreMerges: true },
  qwen2: { pattern: QWEN2_PATTERN, ignoreMerges: false },
  'gpt-2': { pattern: undefined, ignoreMerges: false },
  gpt2: { pattern: undefined, ignoreMerges: false },
};

/**
 * Rebuild a Hugging Face `tokenizer.json` + `tokenizer_config.json` from GGUF tokenizer metadata.
 * Supports `tokenizer.ggml.model` = `llama` (SentencePiece BPE, via {@link sentencePieceTokenizerJson}) and
 * `gpt2` (byte-level BPE with `tokenizer.ggml.merges`, pre-tokenizer from `tokenizer.ggml.pre`: `llama-bpe`,
 * `qwen2`, `gpt-2`). Control tokens (type 3) become special added tokens, user-defined ones (type 4) plain added
 * tokens. Defaults when a flag is absent: `add_bos_token` true for `llama`, false for `gpt2`; `add_eos_token` false;
 * `add_space_prefix` true.
 * @throws EngineError `UNSUPPORTED_TOKENIZER` / `INVALID_CONFIG` / `MALFORMED` naming the metadata key.
 */
export function ggufTokenizerJson(meta: GgufMetadata): { tokenizer: TokenizerJson; config: TokenizerConfigJson } {
  const file = meta.file;
  const model = meta.string('tokenizer.ggml.model');
  const tokens = meta.stringArray('tokenizer.ggml.tokens');
  if (model === undefined || tokens === undefined) {
    throw new EngineError('INVALID_CONFIG', `${file}: no tokenizer in the GGUF metadata (tokenizer.ggml.model / tokenizer.ggml.tokens missing)`, {
      file,
      field: 'tokenizer.ggml.model',
    });
  }
  const n = tokens.length;
  const types = meta.numberArray('tokenizer.ggml.token_type') ?? new Array<number>(n).fill(TokenType.NORMAL);
  if (types.length !== n) {
    throw new EngineError('MALFORMED', `${file}: ${n} tokens but ${types.length} token types`, { file, field: 'tokenizer.ggml.token_type' });
  }
  const id = (key: string): number | undefined => {
    const v = meta.optionalInt(key);
    if (v === undefined || v === 0xffffffff || v === -1) return undefined;
    if (v < 0 || v >= n) throw new EngineError('INVALID_CONFIG', `${file}: ${key} ${v} is outside the ${n} tokens`, { file, field: key });
    return v;
  };
  const bosId = id('tokenizer.ggml.bos_token_id');
  const eosId = id('tokenizer.ggml.eos_token_id');
  const padId = id('tokenizer.ggml.padding_token_id');
  const addEos = meta.bool('tokenizer.ggml.add_eos_token') ?? false;
  const chatTemplate = meta.string('tokenizer.chat_template');

  let result: { tokenizer: TokenizerJson; config: TokenizerConfigJson };
  if (model === 'llama') {
    const scores = meta.numberArray('tokenizer.ggml.scores');
    if (!scores) throw new EngineError('INVALID_CONFIG', `${file}: tokenizer.ggml.scores is missing`, { file, field: 'tokenizer.ggml.scores' });
    result = sentencePieceTokenizerJson({
      pieces: tokens,
      scores,
      types,
      bosId,
      eosId,
      addBos: meta.bool('tokenizer.ggml.add_bos_token') ?? true,
      addEos,
      addSpacePrefix: meta.bool('tokenizer.ggml.add_space_prefix') ?? true,
      file,
    });
  } else if (model === 'gpt2') {
    const pre = meta.string('tokenizer.ggml.pre') ?? 'gpt-2';
    const preTok = PRE_TOKENIZERS[pre];
    if (!preTok) {
      throw new EngineError(
        'UNSUPPORTED_TOKENIZER',
        `${file}: tokenizer.ggml.pre ${describeValue(pre)} is not supported (supported: ${Object.keys(PRE_TOKENIZERS).join(', ')})`,
        { file, field: 'tokenizer.ggml.pre' },
      );
    }
    const merges = meta.stringArray('tokenizer.ggml.merges');
    if (!merges) throw new EngineError('INVALID_CONFIG', `${file}: tokenizer.ggml.merges is missing`, { file, field: 'tokenizer.ggml.merges' });
    const vocab: Record<string, number> = {};
    const added: Array<Record<string, unknown>> = [];
    tokens.forEach((t, i) => {
      const type = types[i]!;
      if (type === TokenType.CONTROL || type === TokenType.USER_DEFINED) {
        added.push({ id: i, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: type === TokenType.CONTROL });
      }
      if (!Object.prototype.hasOwnProperty.call(vocab, t)) vocab[t] = i;
      else if (type !== TokenType.CONTROL && type !== TokenType.USER_DEFINED) {
        throw new EngineError('MALFORMED', `${file}: token ${JSON.stringify(t)} appears twice (ids ${vocab[t]} and ${i})`, {
          file,
          field: 'tokenizer.ggml.tokens',
        });
      }
    });
    const addBos = meta.bool('tokenizer.ggml.add_bos_token') ?? false;
    const postProcessor = templateProcessing(
      addBos && bosId !== undefined ? { piece: tokens[bosId]!, id: bosId } : undefined,
      addEos && eosId !== undefined ? { piece: tokens[eosId]!, id: eosId } : undefined,
    );
    const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: preTok.pattern === undefined };
    result = {
      tokenizer: {
        version: '1.0',
        truncation: null,
        padding: null,
        added_tokens: added,
        normalizer: null,
        pre_tokenizer: preTok.pattern
          ? {
              type: 'Sequence',
              pretokenizers: [{ type: 'Split', pattern: { Regex: preTok.pattern }, behavior: 'Isolated', invert: false }, byteLevel],
            }
          : byteLevel,
        post_processor: postProcessor,
        decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        model: {
          type: 'BPE',
          dropout: null,
          unk_token: null,
          continuing_subword_prefix: null,
          end_of_word_suffix: null,
          fuse_unk: false,
          byte_fallback: false,
          ignore_merges: preTok.ignoreMerges,
          vocab,
          merges: merges.map((m) => {
            const parts = m.split(' ');
            if (parts.length !== 2) {
              throw new EngineError('MALFORMED', `${file}: merge ${JSON.stringify(m)} is not "left right"`, { file, field: 'tokenizer.ggml.merges' });
            }
            return parts;
          }),
        },
      },
      config: {
        tokenizer_class: 'PreTrainedTokenizerFast',
        add_bos_token: addBos,
        add_eos_token: addEos,
        bos_token: bosId === undefined ? null : tokens[bosId],
        eos_token: eosId === undefined ? null : tokens[eosId],
        clean_up_tokenization_spaces: false,
      },
    };
  } else {
    throw new EngineError('UNSUPPORTED_TOKENIZER', `${file}: tokenizer.ggml.model ${describeValue(model)} is not supported (llama, gpt2)`, {
      file,
      field: 'tokenizer.ggml.model',
    });
  }
  if (padId !== undefined) result.config.pad_token = tokens[padId];
  if (chatTemplate !== undefined) result.config.chat_template = chatTemplate;
  return result;
}
