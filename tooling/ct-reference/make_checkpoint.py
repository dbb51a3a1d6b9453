#!/usr/bin/env python3
"""Independent compressed-tensors checkpoints of a small random Llama, written with numpy only (kvq's own code).

Makes folders kvq's loader must read without any kvq code involved in writing them, and records the float64 NLL
(forward.py) of fixed token ids over each one's dequantized weights:
  fp8/          float-quantized: F8_E4M3 weights (own round-to-nearest-even e4m3fn encoder), BF16 per-channel
                scales [out, 1], a static F32 input_scale per Linear (kept, not applied), lm_head ignored
  w4a16-asym/   pack-quantized: int4 groups of 32, asymmetric; weight_packed I32 [out, in/8], weight_shape I64,
                BF16 scales [out, in/32], weight_zero_point packed along the OUTPUT dim: I32 [ceil(out/8), groups]
Layout facts (pack_to_int32 with packed_dim 0 / 1, scale shapes) as written in docs/spec/compressed-tensors.md.

Usage: python3 make_checkpoint.py OUT_DIR   (writes OUT_DIR/{fp8,w4a16-asym}/ and OUT_DIR/expected.json)
"""
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward  # noqa: E402  (the float64 reference of this folder)

SEED = 20261203
CFG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "max_position_embeddings": 128, "tie_word_embeddings": False, "torch_dtype": "float32",
    "bos_token_id": 0, "eos_token_id": 1, "attention_bias": False, "rope_scaling": None,
}
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def shapes(c):
    h, f = c["hidden_size"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    return {"self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h), "self_attn.o_proj": (h, q),
            "mlp.gate_proj": (f, h), "mlp.up_proj": (f, h), "mlp.down_proj": (h, f)}


def random_weights(rng, c):
    w = {}
    h, v = c["hidden_size"], c["vocab_size"]
    w["model.embed_tokens.weight"] = rng.standard_normal((v, h)).astype(np.float32)
    w["lm_head.weight"] = (rng.standard_normal((v, h)) / np.sqrt(h)).astype(np.float32)
    w["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    for layer in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
        for m, (rows, cols) in shapes(c).items():
            w[p + m + ".weight"] = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
    return w


def to_bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (finite inputs)."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def encode_e4m3(x):
    """Round-to-nearest-even e4m3fn codes of float64 values already clipped to [-448, 448]."""
    table = forward.E4M3
    pos_codes = np.array([c for c in range(0x7F) if np.isfinite(table[c])])  # 0x00..0x7e, increasing values
    pos_vals = table[pos_codes]
    a = np.abs(x)
    hi = np.clip(np.searchsorted(pos_vals, a), 0, len(pos_vals) - 1)
    lo = np.clip(hi - 1, 0, len(pos_vals) - 1)
    d_lo, d_hi = np.abs(a - pos_vals[lo]), np.abs(pos_vals[hi] - a)
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (pos_codes[hi] % 2 == 0))
    code = np.where(pick_hi, pos_codes[hi], pos_codes[lo])
    return (code | np.where(x < 0, 0x80, 0)).astype(np.uint8)


def pack_nibbles(vals, axis_rows):
    """Pack int values in [-8, 7] (+8) into int32 words: 8 per word along the last axis of `vals` [n, m]."""
    n, m = vals.shape
    words = (m + 7) // 8
    padded = np.zeros((n, words * 8), dtype=np.int64)
    padded[:, :m] = vals + 8
    out = np.zeros((n, words), dtype=np.int64)
    for k in range(8):
        out |= padded[:, k::8] << (4 * k)
    return (out & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, shape, bytes). Sorted by name; data back to back."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dt, shape, raw = tensors[name]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def dense(t):
    return ("F32", t.shape, np.ascontiguousarray(t, dtype="<f4").tobytes())


def fp8_checkpoint(w, c):
    out = {}
    for name, t in w.items():
        module = name[: -len(".weight")]
        if not any(module.endswith(m) for m in LINEARS):
            out[name] = dense(t)
            continue
        amax = np.abs(t.astype(np.float64)).max(axis=1, keepdims=True)
        scale_bits = to_bf16_bits((amax / 448.0).astype(np.float32))
        scale = bf16_value(scale_bits)
        codes = encode_e4m3(np.clip(t.astype(np.float64) / scale, -448, 448))
        out[module + ".weight"] = ("F8_E4M3", t.shape, codes.tobytes())
        out[module + ".weight_scale"] = ("BF16", (t.shape[0], 1), scale_bits.astype("<u2").tobytes())
        out[module + ".input_scale"] = ("F32", (1,), np.array([0.0625], dtype="<f4").tobytes())
    qc = {
        "quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
        "ignore": ["lm_head"], "kv_cache_scheme": None, "global_compression_ratio": None,
        "config_groups": {"group_0": {"targets": ["Linear"],
                                      "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", "dynamic": False},
                                      "input_activations": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor", "dynamic": False}}},
    }
    return out, qc


def w4_asym_checkpoint(w, c, group=32):
    out = {}
    for name, t in w.items():
        module = name[: -len(".weight")]
        if not any(module.endswith(m) for m in LINEARS):
            out[name] = dense(t)
            continue
        rows, cols = t.shape
        g = t.astype(np.float64).reshape(rows, cols // group, group)
        mn = np.minimum(g.min(axis=2), 0.0)
        mx = np.maximum(g.max(axis=2), 0.0)
        scale_bits = to_bf16_bits(np.maximum((mx - mn) / 15.0, 1e-8).astype(np.float32))
        scale = bf16_value(scale_bits)
        zp = np.clip(np.round(-8 - mn / scale), -8, 7).astype(np.int64)
        q = np.clip(np.round(g / scale[:, :, None] + zp[:, :, None]), -8, 7).astype(np.int64).reshape(rows, cols)
        out[module + ".weight_packed"] = ("I32", (rows, cols // 8), pack_nibbles(q, False).astype("<i4").tobytes())
        out[module + ".weight_shape"] = ("I64", (2,), np.array([rows, cols], dtype="<i8").tobytes())
        out[module + ".weight_scale"] = ("BF16", (rows, cols // group), scale_bits.astype("<u2").tobytes())
        zp_packed = pack_nibbles(zp.T.copy(), True).T  # packed along the output dim: [ceil(rows/8), groups]
        out[module + ".weight_zero_point"] = ("I32", zp_packed.shape, np.ascontiguousarray(zp_packed).astype("<i4").tobytes())
    qc = {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "ignore": ["lm_head"], "kv_cache_scheme": None,
        "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                      "weights": {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": group, "actorder": None, "dynamic": False}}},
    }
    return out, qc


def write_folder(path, tensors, qc, c):
    os.makedirs(path, exist_ok=True)
    write_safetensors(os.path.join(path, "model.safetensors"), tensors)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({**c, "quantization_config": qc}, f, indent=1)
        f.write("\n")
    vocab = {chr(0x41 + i) if i < 58 else "t%d" % i: i for i in range(c["vocab_size"])}
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        json.dump({"model": {"type": "BPE", "vocab": vocab, "merges": []}}, f)
        f.write("\n")


def main():
    out_dir = sys.argv[1]
    rng = np.random.default_rng(SEED)
    w = random_weights(rng, CFG)
    ids = [[0] + [int(x) for x in rng.integers(2, CFG["vocab_size"], 47)], [0] + [int(x) for x in rng.integers(2, CFG["vocab_size"], 31)]]
    expected = {"seed": SEED, "numpy": np.__version__, "documents": ids, "results": {}}
    for name, make in (("fp8", fp8_checkpoint), ("w4a16-asym", w4_asym_checkpoint)):
        tensors, qc = make(w, CFG)
        folder = os.path.join(out_dir, name)
        write_folder(folder, tensors, qc, CFG)
        cfg, W = forward.load(folder)
        total, count = 0.0, 0
        for doc in ids:
            logits = forward.forward_logits(cfg, W, doc)
            m = logits.max(axis=-1, keepdims=True)
            logp = logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))
            total += float(-logp[np.arange(len(doc) - 1), np.asarray(doc[1:])].sum())
            count += len(doc) - 1
        expected["results"][name] = {"tokens": count, "nll_sum": total, "nll_mean": total / count}
    text = json.dumps(expected, indent=1)
    for doc in ids:
        text = text.replace(json.dumps(doc, indent=1).replace("\n", "\n  "), json.dumps(doc), 1)
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
