#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Independent float64 numpy reference for kvq's architecture variants (issue 14).

Writes small random-weight Hugging Face folders (config.json, model.safetensors in bf16, a byte-level
tokenizer.json) under models/<name>/, reads them back, runs a float64 forward pass written from the
architecture semantics recorded in docs/spec/architectures.md (not from kvq's TypeScript), and records
the logits of every position and the greedy continuation in expected/<name>.json with the sha256 of the
files it read. kvq's test (packages/engine/src/runtime/architectures.test.ts) loads the same folders.

Run: python3 tooling/arch-reference/arch_reference.py   (needs numpy only; Debian python3-numpy)
"""
import hashlib
import json
import math
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT = [1, 17, 200, 35, 99, 4, 250, 61, 128, 7, 33, 90]
GREEDY_STEPS = 8

# ---------------------------------------------------------------------------------------------- models
# Each spec: the config.json to write, the tensor prefix of the checkpoint, and the table length kvq runs
# with (max_model_len; only dynamic RoPE depends on it).
SPECS = {
    "qwen3-yarn-swa": {
        "config": {
            "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 24,
            "intermediate_size": 96, "vocab_size": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
            "max_position_embeddings": 64, "use_sliding_window": True, "sliding_window": 4,
            "max_window_layers": 1, "tie_word_embeddings": True, "attention_bias": False,
            "hidden_act": "silu", "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
        },
        "max_model_len": 64,
    },
    "gemma2-softcap": {
        "config": {
            "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "intermediate_size": 128, "vocab_size": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "max_position_embeddings": 64, "sliding_window": 4, "query_pre_attn_scalar": 24,
            "attn_logit_softcapping": 3.0, "final_logit_softcapping": 3.0,
            "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
            "torch_dtype": "bfloat16", "bos_token_id": 2, "eos_token_id": 1,
        },
        "max_model_len": 64,
    },
    "gemma3-multimodal-text": {
        "config": {
            "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
            "torch_dtype": "bfloat16", "eos_token_id": [1, 106],
            "text_config": {
                "model_type": "gemma3_text", "hidden_size": 48, "num_hidden_layers": 3,
                "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
                "intermediate_size": 128, "vocab_size": 256, "rms_norm_eps": 1e-6,
                "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                "rope_scaling": {"rope_type": "linear", "factor": 2.0}, "sliding_window_pattern": 3,
                "max_position_embeddings": 64, "sliding_window": 5, "query_pre_attn_scalar": 20,
                "final_logit_softcapping": None, "attn_logit_softcapping": None,
                "hidden_activation": "gelu_pytorch_tanh",
            },
            "vision_config": {"model_type": "siglip_vision_model"},
        },
        "prefix": "language_model.",
        "extra_tensors": {"vision_tower.patch_embedding.weight": (4, 8), "multi_modal_projector.mm_input_projection_weight": (8, 48)},
        "max_model_len": 64,
    },
    "phi3-longrope": {
        "config": {
            "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 96, "vocab_size": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "max_position_embeddings": 64, "original_max_position_embeddings": 8, "sliding_window": 6,
            "rope_scaling": {"type": "longrope",
                             "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 4.0],
                             "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 20.0]},
            "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "bfloat16",
            "bos_token_id": 1, "eos_token_id": 32000,
        },
        "max_model_len": 64,
    },
    "qwen2-dynamic-swa": {
        "config": {
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 96, "vocab_size": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "rope_scaling": {"type": "dynamic", "factor": 2.0}, "max_position_embeddings": 16,
            "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 0,
            "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "bfloat16",
            "bos_token_id": 1, "eos_token_id": 2,
        },
        "max_model_len": 48,
    },
    "mistral-swa": {
        "config": {
            "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
            "intermediate_size": 96, "vocab_size": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "max_position_embeddings": 64, "sliding_window": 3, "tie_word_embeddings": False,
            "hidden_act": "silu", "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
        },
        "max_model_len": 64,
    },
}


def text_config(cfg):
    return cfg["text_config"] if "text_config" in cfg else cfg


def family(cfg):
    return text_config(cfg).get("model_type", cfg["model_type"])


def tensor_shapes(spec):
    c = text_config(spec["config"])
    fam = family(spec["config"])
    h, L = c["hidden_size"], c["num_hidden_layers"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", h // nh)
    ff, V = c["intermediate_size"], c["vocab_size"]
    p = spec.get("prefix", "")
    gemma = fam.startswith("gemma")
    out = [(p + "model.embed_tokens.weight", (V, h), "embed")]
    for l in range(L):
        q = f"{p}model.layers.{l}."
        out.append((q + "input_layernorm.weight", (h,), "norm"))
        if fam == "phi3":
            out.append((q + "self_attn.qkv_proj.weight", ((nh + 2 * nkv) * hd, h), "mat"))
        else:
            out.append((q + "self_attn.q_proj.weight", (nh * hd, h), "mat"))
            out.append((q + "self_attn.k_proj.weight", (nkv * hd, h), "mat"))
            out.append((q + "self_attn.v_proj.weight", (nkv * hd, h), "mat"))
        if fam == "qwen2":
            out.append((q + "self_attn.q_proj.bias", (nh * hd,), "bias"))
            out.append((q + "self_attn.k_proj.bias", (nkv * hd,), "bias"))
            out.append((q + "self_attn.v_proj.bias", (nkv * hd,), "bias"))
        out.append((q + "self_attn.o_proj.weight", (h, nh * hd), "mat"))
        if fam in ("qwen3", "gemma3_text"):
            out.append((q + "self_attn.q_norm.weight", (hd,), "norm"))
            out.append((q + "self_attn.k_norm.weight", (hd,), "norm"))
        out.append((q + "post_attention_layernorm.weight", (h,), "norm"))
        if gemma:
            out.append((q + "pre_feedforward_layernorm.weight", (h,), "norm"))
            out.append((q + "post_feedforward_layernorm.weight", (h,), "norm"))
        if fam == "phi3":
            out.append((q + "mlp.gate_up_proj.weight", (2 * ff, h), "mat"))
        else:
            out.append((q + "mlp.gate_proj.weight", (ff, h), "mat"))
            out.append((q + "mlp.up_proj.weight", (ff, h), "mat"))
        out.append((q + "mlp.down_proj.weight", (h, ff), "mat"))
    out.append((p + "model.norm.weight", (h,), "norm"))
    if not c.get("tie_word_embeddings", gemma):
        out.append((p + "lm_head.weight", (V, h), "mat"))
    for name, shape in spec.get("extra_tensors", {}).items():
        out.append((name, shape, "mat"))
    return out


def to_bf16_bits(x):
    """float -> bfloat16 bits, round to nearest even."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def random_weights(spec, seed):
    rng = np.random.default_rng(seed)
    gemma = family(spec["config"]).startswith("gemma")
    tied = text_config(spec["config"]).get("tie_word_embeddings", gemma)
    out = {}
    for name, shape, kind in tensor_shapes(spec):
        if kind == "embed":  # tied (LM head) or sqrt(hidden)-scaled (Gemma) tables: unit-size logits / residuals
            v = rng.standard_normal(shape) / (math.sqrt(shape[1]) if tied else 1.0)
        elif kind == "norm":  # Gemma stores w with the 1 outside: (1 + w)
            v = (0.0 if gemma else 1.0) + 0.2 * rng.standard_normal(shape)
        elif kind == "bias":
            v = 0.1 * rng.standard_normal(shape)
        else:
            v = rng.standard_normal(shape) / math.sqrt(shape[1])
        out[name] = (shape, to_bf16_bits(v))
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, (shape, bits) in tensors.items():
        data = bits.astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        assert info["dtype"] == "BF16"
        bits = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<u2")
        out[name] = from_bf16_bits(bits).reshape(info["shape"])
    return out


def byte_level_tokenizer():
    """A byte-level BPE tokenizer.json with the 256 byte tokens and no merges (GPT-2 byte-to-unicode map)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): b for b, c in zip(bs, cs)}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }


# ---------------------------------------------------------------------------------------------- forward
def rms_norm(x, w, eps, offset):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (offset + w)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def base_inv_freq(theta, dim):
    return 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)


def rope_tables(rs, theta, dim, positions, max_pos, orig_top, table_len):
    """cos, sin [T, dim/2] for the given positions, with the scaling rs (a config.json rope_scaling dict)."""
    pos = np.asarray(positions, dtype=np.float64)
    kind = None if rs is None else rs.get("rope_type", rs.get("type"))
    af = 1.0
    if kind in (None, "default"):
        inv = np.tile(base_inv_freq(theta, dim), (len(pos), 1))
    elif kind == "linear":
        inv = np.tile(base_inv_freq(theta, dim) / rs["factor"], (len(pos), 1))
    elif kind == "dynamic":
        # Dynamic NTK with the sequence length fixed at the table length (vLLM's static form).
        seq = max(table_len, max_pos)
        f = rs["factor"]
        base = theta * ((f * seq / max_pos) - (f - 1)) ** (dim / (dim - 2))
        inv = np.tile(base_inv_freq(base, dim), (len(pos), 1))
    elif kind == "yarn":
        f = rs["factor"]
        orig = rs.get("original_max_position_embeddings", max_pos)
        lo = dim * math.log(orig / (32 * 2 * math.pi)) / (2 * math.log(theta))
        hi = dim * math.log(orig / (1 * 2 * math.pi)) / (2 * math.log(theta))
        lo, hi = max(math.floor(lo), 0), min(math.ceil(hi), dim - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(dim // 2) - lo) / (hi - lo), 0.0, 1.0)
        keep = 1.0 - ramp  # share of the unscaled (extrapolated) frequency
        b = base_inv_freq(theta, dim)
        inv = np.tile(b / f * (1 - keep) + b * keep, (len(pos), 1))
        af = 0.1 * math.log(f) + 1.0 if f > 1 else 1.0
    elif kind in ("longrope", "su"):
        orig = rs.get("original_max_position_embeddings", orig_top)
        f = max_pos / orig
        af = 1.0 if f <= 1 else math.sqrt(1 + math.log(f) / math.log(orig))
        b = base_inv_freq(theta, dim)
        short, long = np.asarray(rs["short_factor"]), np.asarray(rs["long_factor"])
        inv = np.stack([b / (long if p >= orig else short) for p in pos])  # per position (vLLM)
    else:
        raise ValueError(kind)
    ang = pos[:, None] * inv
    return np.cos(ang) * af, np.sin(ang) * af


def apply_rope(x, cos, sin):
    """x [T, H, D] rotate-half."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def layer_kinds(c, fam, L):
    """'sliding' / 'full' per layer and the window, from the config semantics."""
    w = c.get("sliding_window")
    if fam in ("mistral", "phi3"):
        return ["sliding" if w else "full"] * L, w
    if fam in ("qwen2", "qwen3"):
        if not c.get("use_sliding_window") or not w:
            return ["full"] * L, None
        m = c.get("max_window_layers", L)
        return ["sliding" if i >= m else "full" for i in range(L)], w
    if fam == "gemma2":
        return ["sliding" if (i + 1) % 2 else "full" for i in range(L)], w
    if fam == "gemma3_text":
        p = c.get("sliding_window_pattern", 6)
        return ["sliding" if (i + 1) % p else "full" for i in range(L)], w
    raise ValueError(fam)


def forward(spec, W, tokens, table_len):
    cfg = spec["config"]
    c = text_config(cfg)
    fam = family(cfg)
    p = spec.get("prefix", "")
    gemma = fam.startswith("gemma")
    h, L = c["hidden_size"], c["num_hidden_layers"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", h // nh)
    ff = c["intermediate_size"]
    eps = c["rms_norm_eps"]
    off = 1.0 if gemma else 0.0
    T = len(tokens)
    pos = np.arange(T)
    x = W[p + "model.embed_tokens.weight"][tokens]
    if gemma:
        x = x * from_bf16_bits(to_bf16_bits(math.sqrt(h)))[()]  # normalizer in the model dtype
    kinds, window = layer_kinds(c, fam, L)
    max_pos = c["max_position_embeddings"]
    theta = c.get("rope_theta", 10000.0)
    glob = rope_tables(c.get("rope_scaling"), theta, hd, pos, max_pos, c.get("original_max_position_embeddings"), table_len)
    local = rope_tables(None, c.get("rope_local_base_freq"), hd, pos, max_pos, None, table_len) if fam == "gemma3_text" else glob
    scale = c["query_pre_attn_scalar"] ** -0.5 if gemma else hd ** -0.5
    cap = c.get("attn_logit_softcapping") if fam == "gemma2" else None
    for l in range(L):
        q_ = f"{p}model.layers.{l}."
        g = lambda n: W[q_ + n]
        xn = rms_norm(x, g("input_layernorm.weight"), eps, off)
        if fam == "phi3":
            qkv = xn @ g("self_attn.qkv_proj.weight").T
            q, k, v = qkv[:, :nh * hd], qkv[:, nh * hd:(nh + nkv) * hd], qkv[:, (nh + nkv) * hd:]
        else:
            q = xn @ g("self_attn.q_proj.weight").T
            k = xn @ g("self_attn.k_proj.weight").T
            v = xn @ g("self_attn.v_proj.weight").T
        if fam == "qwen2":
            q, k, v = q + g("self_attn.q_proj.bias"), k + g("self_attn.k_proj.bias"), v + g("self_attn.v_proj.bias")
        q, k, v = q.reshape(T, nh, hd), k.reshape(T, nkv, hd), v.reshape(T, nkv, hd)
        if fam in ("qwen3", "gemma3_text"):
            q = rms_norm(q, g("self_attn.q_norm.weight"), eps, off)
            k = rms_norm(k, g("self_attn.k_norm.weight"), eps, off)
        cos, sin = local if kinds[l] == "sliding" else glob
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = np.zeros((T, nh, hd))
        for hh in range(nh):
            kv = hh // (nh // nkv)
            s = (q[:, hh, :] @ k[:, kv, :].T) * scale
            if cap:
                s = cap * np.tanh(s / cap)
            i, j = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
            allowed = j <= i
            if kinds[l] == "sliding":
                allowed &= j > i - window
            s = np.where(allowed, s, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            out[:, hh, :] = s @ v[:, kv, :]
        a = out.reshape(T, nh * hd) @ g("self_attn.o_proj.weight").T
        if gemma:
            a = rms_norm(a, g("post_attention_layernorm.weight"), eps, off)
            x = x + a
            xn = rms_norm(x, g("pre_feedforward_layernorm.weight"), eps, off)
        else:
            x = x + a
            xn = rms_norm(x, g("post_attention_layernorm.weight"), eps, off)
        if fam == "phi3":
            gu = xn @ g("mlp.gate_up_proj.weight").T
            gate, up = gu[:, :ff], gu[:, ff:]
        else:
            gate, up = xn @ g("mlp.gate_proj.weight").T, xn @ g("mlp.up_proj.weight").T
        m = ((gelu_tanh(gate) if gemma else silu(gate)) * up) @ g("mlp.down_proj.weight").T
        if gemma:
            m = rms_norm(m, g("post_feedforward_layernorm.weight"), eps, off)
        x = x + m
    x = rms_norm(x, W[p + "model.norm.weight"], eps, off)
    head = W.get(p + "lm_head.weight", W[p + "model.embed_tokens.weight"])
    logits = x @ head.T
    fcap = c.get("final_logit_softcapping") if fam == "gemma2" else None
    if fcap:
        logits = fcap * np.tanh(logits / fcap)
    return logits


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    os.makedirs(os.path.join(HERE, "expected"), exist_ok=True)
    for seed, (name, spec) in enumerate(SPECS.items(), start=1):
        d = os.path.join(HERE, "models", name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(spec["config"], f, indent=2)
            f.write("\n")
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            json.dump(byte_level_tokenizer(), f, ensure_ascii=False)
        write_safetensors(os.path.join(d, "model.safetensors"), random_weights(spec, 1000 + seed))
        # Read back what was written: the reference runs on the files kvq loads.
        W = read_safetensors(os.path.join(d, "model.safetensors"))
        tokens = list(PROMPT)
        margins = []
        for _ in range(GREEDY_STEPS):
            last = forward(spec, W, tokens, spec["max_model_len"])[-1]
            order = np.argsort(-last)
            margins.append(float(last[order[0]] - last[order[1]]))
            tokens.append(int(order[0]))
        logits = forward(spec, W, tokens[:-1], spec["max_model_len"])
        out = {
            "model": name,
            "files": {fn: sha256(os.path.join(d, fn)) for fn in ("config.json", "model.safetensors")},
            "max_model_len": spec["max_model_len"],
            "prompt": PROMPT,
            "greedy": tokens[len(PROMPT):],
            "greedy_top2_margin_min": min(margins),
            "logits": [[float(f"{v:.9g}") for v in row] for row in logits],
        }
        with open(os.path.join(HERE, "expected", f"{name}.json"), "w") as f:
            json.dump(out, f, separators=(",", ":"))
            f.write("\n")
        print(name, "greedy", out["greedy"], "min margin %.4f" % out["greedy_top2_margin_min"],
              "logit range %.2f..%.2f" % (logits.min(), logits.max()))


if __name__ == "__main__":
    main()
