#!/usr/bin/env python3
"""Collect forward.py results into @kvq/fixtures' reference/kvq-tiny-compressed-tensors.json.

Usage: python3 record.py DIR OUT.json
  DIR holds ids.json, fp8/ and w4a16/ (written by the engine test with KVQ_CT_REFERENCE_OUT=DIR) and
  bf16.result.json, fp8.result.json, w4a16.result.json (forward.py --out on the kvq-tiny folder, DIR/fp8, DIR/w4a16).
"""
import hashlib
import json
import os
import sys


def main():
    d, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(d, "ids.json")) as f:
        documents = json.load(f)["documents"]
    results = {}
    for scheme in ("bf16", "fp8", "w4a16"):
        with open(os.path.join(d, scheme + ".result.json")) as f:
            r = json.load(f)
        st = os.path.join(d, scheme, "model.safetensors")
        sha = hashlib.sha256(open(st, "rb").read()).hexdigest() if os.path.exists(st) else None
        results[scheme] = {"sha256": sha, "tokens": r["tokens"], "nll_sum": r["nll_sum"], "nll_mean": r["nll_mean"]}
    doc = {
        "what": "float64 numpy NLL (tooling/ct-reference/forward.py) of kvq-tiny (bf16) and of its fp8 / w4a16 compressed-tensors checkpoints written by kvq quantize, over these token ids",
        "numpy": r.get("numpy"),
        "documents": documents,
        "results": results,
    }
    text = json.dumps(doc, indent=1)
    # One line per document keeps the file short and readable.
    for ids in documents:
        text = text.replace(json.dumps(ids, indent=1).replace("\n", "\n  "), json.dumps(ids), 1)
    with open(out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
