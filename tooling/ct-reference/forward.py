#!/usr/bin/env python3
"""Independent float64 reference for compressed-tensors checkpoints of Llama-family models (kvq's own code).

Reads a Hugging Face folder whose config.json may carry a compressed-tensors `quantization_config`
(formats float-quantized, int-quantized, naive-quantized, pack-quantized), parses model.safetensors by hand
(8-byte little-endian header length, JSON header, raw little-endian bytes), dequantizes every quantized Linear
to float64 (fp8 e4m3fn decoded from its bit fields, int4 unpacked from int32 words, int8), runs the Llama forward
pass in float64 (RMSNorm, rotate-half RoPE, grouped-query causal attention, SiLU MLP) and prints, as JSON, the
negative log-likelihood of each token of the given token ids after the first, their sum and mean.

Nothing here comes from kvq's TypeScript or from compressed-tensors' code: the facts it relies on are in
docs/spec/compressed-tensors.md (pack_to_int32 bit layout, weight_scale shapes, w = (q - zero_point) * scale).

Usage: python3 forward.py MODEL_DIR --ids IDS.json [--out RESULT.json]
  IDS.json: {"documents": [[id, id, ...], ...]}  (each document scored on its own, from position 0)
"""
import argparse
import json
import math
import os
import re
import struct
import sys

import numpy as np

DTYPES = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": (None, 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1), "U8": ("u1", 1),
    "F8_E4M3": (None, 1),
}


def read_safetensors(path):
    """name -> (dtype string, shape, raw bytes) of every tensor."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        out[name] = (entry["dtype"], list(entry["shape"]), blob[base + begin:base + end])
    return out


def e4m3fn_table():
    """float64 value of each of the 256 OCP e4m3fn codes: 1 sign, 4 exponent (bias 7), 3 mantissa bits; S.1111.111 is NaN."""
    t = np.empty(256, dtype=np.float64)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exp = (code >> 3) & 0xF
        man = code & 0x7
        if exp == 0xF and man == 0x7:
            t[code] = np.nan
        elif exp == 0:
            t[code] = sign * (man / 8.0) * 2.0 ** (1 - 7)
        else:
            t[code] = sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)
    return t


E4M3 = e4m3fn_table()


def as_float64(dtype, shape, raw):
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64).reshape(shape)
    if dtype == "F8_E4M3":
        return E4M3[np.frombuffer(raw, dtype=np.uint8)].reshape(shape)
    np_dtype = DTYPES[dtype][0]
    return np.frombuffer(raw, dtype=np_dtype).astype(np.float64).reshape(shape)


def as_int(dtype, shape, raw):
    return np.frombuffer(raw, dtype=DTYPES[dtype][0]).astype(np.int64).reshape(shape)


def unpack_int4_rows(words, rows, cols):
    """int32 [rows, ceil(cols/8)]: value c of a row sits in word c // 8 at bit 4 * (c % 8), stored as q + 8."""
    w = words.astype(np.int64) & 0xFFFFFFFF
    shifts = np.arange(8, dtype=np.int64) * 4
    nib = (w[:, :, None] >> shifts[None, None, :]) & 0xF
    return nib.reshape(rows, -1)[:, :cols] - 8


def module_scheme(qc, module):
    """The config group quantizing `module`, or None (compressed-tensors matching: exact > re: > class Linear; ignore).

    Without the torch module tree, the Linear modules of a Llama-family model are known by name: `*_proj` and `lm_head`.
    """
    is_linear = module.endswith("_proj") or module == "lm_head"
    def rank(targets):
        best = 0
        for t in targets:
            if t.startswith("re:"):
                if re.match(t[3:], module):
                    best = max(best, 2)
            elif t == module:
                best = max(best, 3)
            elif t == "Linear" and is_linear:
                best = max(best, 1)
        return best
    if rank(qc.get("ignore") or []) > 0:
        return None
    chosen, best = None, 0
    for g in (qc.get("config_groups") or {}).values():
        if not g.get("weights"):
            continue
        r = rank(g["targets"])
        if r > best:
            chosen, best = g, r
    return chosen


def dequantize(tensors, module, rows, cols, group, fmt):
    w = group["weights"]
    bits = w.get("num_bits", 8)
    scale_dt, scale_shape, scale_raw = tensors[module + ".weight_scale"]
    scale = as_float64(scale_dt, scale_shape, scale_raw)
    if fmt == "pack-quantized":
        dt, shape, raw = tensors[module + ".weight_packed"]
        assert bits == 4, "this reference unpacks 4-bit packs only"
        q = unpack_int4_rows(as_int(dt, shape, raw), rows, cols).astype(np.float64)
    else:
        dt, shape, raw = tensors[module + ".weight"]
        q = as_float64(dt, shape, raw) if dt == "F8_E4M3" else as_int(dt, shape, raw).astype(np.float64)
    zp = None
    if not w.get("symmetric", True):
        zdt, zshape, zraw = tensors[module + ".weight_zero_point"]
        groups = scale.reshape(rows, -1).shape[1]
        if zdt == "I32":  # packed along the output dim: row r in word r // 8 at bit 4 * (r % 8)
            zp = unpack_int4_rows(as_int(zdt, zshape, zraw).T.copy(), groups, rows).T.astype(np.float64)
        else:
            zp = as_int(zdt, zshape, zraw).astype(np.float64).reshape(rows, groups)
    strategy = w.get("strategy") or ("group" if w.get("group_size") else "tensor")
    if strategy == "tensor":
        s = np.full((rows, cols), scale.reshape(-1)[0])
        z = 0.0 if zp is None else np.full((rows, cols), zp.reshape(-1)[0])
    else:
        per_row = scale.reshape(rows, -1)
        g = cols // per_row.shape[1]
        s = np.repeat(per_row, g, axis=1)
        z = 0.0 if zp is None else np.repeat(zp.reshape(rows, -1), g, axis=1)
    return (q - z) * s


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    tensors = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    qc = cfg.get("quantization_config")
    if qc is not None and qc.get("quant_method") != "compressed-tensors":
        qc = None
    weights = {}
    for name, (dt, shape, raw) in tensors.items():
        if name.endswith(".weight") and (qc is None or module_scheme(qc, name[:-7]) is None):
            weights[name] = as_float64(dt, shape, raw)
    if qc is not None:
        modules = set()
        for name in tensors:
            for suffix in (".weight_packed", ".weight_scale"):
                if name.endswith(suffix):
                    modules.add(name[: -len(suffix)])
        for m in sorted(modules):
            group = module_scheme(qc, m)
            if group is None:
                continue
            fmt = group.get("format") or qc.get("format")
            if fmt == "pack-quantized":
                rows, cols = (int(v) for v in as_int(*tensors[m + ".weight_shape"]).reshape(-1))
            else:
                rows, cols = tensors[m + ".weight"][1]
            weights[m + ".weight"] = dequantize(tensors, m, rows, cols, group, fmt)
    return cfg, weights


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def forward_logits(cfg, W, ids):
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or h // nh
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    if cfg.get("rope_scaling"):
        raise SystemExit("rope_scaling is not implemented in this reference")
    T = len(ids)
    x = W["model.embed_tokens.weight"][np.asarray(ids)]
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(t):  # t [T, heads, hd], rotate-half pairs (i, i + hd/2)
        a, b = t[..., : hd // 2], t[..., hd // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)

    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for layer in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        y = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = rope((y @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd))
        k = rope((y @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd))
        v = (y @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask[None]
        att = np.exp(att - att.max(axis=-1, keepdims=True))
        att /= att.sum(axis=-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, nh * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        y = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = y @ W[p + "mlp.gate_proj.weight"].T
        u = y @ W[p + "mlp.up_proj.weight"].T
        x = x + ((g / (1.0 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight")
    if head is None or cfg.get("tie_word_embeddings"):
        head = W["model.embed_tokens.weight"]
    return x @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--out")
    a = ap.parse_args()
    cfg, W = load(a.model_dir)
    with open(a.ids) as f:
        docs = json.load(f)["documents"]
    per_doc = []
    total, count = 0.0, 0
    for ids in docs:
        logits = forward_logits(cfg, W, ids)
        m = logits.max(axis=-1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))
        nll = -logp[np.arange(len(ids) - 1), np.asarray(ids[1:])]
        per_doc.append(float(nll.sum()))
        total += float(nll.sum())
        count += len(ids) - 1
    result = {"tokens": count, "nll_sum": total, "nll_mean": total / count, "nll_sum_per_document": per_doc, "numpy": np.__version__}
    text = json.dumps(result, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
