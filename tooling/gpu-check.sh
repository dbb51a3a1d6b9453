#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# GPU check of @kvq/kernels-cuda: builds (or reuses) the CUDA addon and runs, on the GPU, the parity suite of
# @kvq/kernels/testing against the reference backend, the bad-input suite, long-context attention, residency,
# csrc/fp8.h against CUDA's own FP8 conversions (all 2^32 inputs), and the benchmarks (decode attention with
# FP8 vs bf16 KV at 4k / 16k / 64k context, achieved bandwidth vs the device's peak; linear). Results go to
# OUTDIR/gpu-check.json (+ gpu-check.log, env.txt). Budget: well under 8 minutes on an H100.
#
#   tooling/gpu-check.sh [OUTDIR]     on the GPU machine (OUTDIR default: $OUT, else ./gpu-check-out)
#   tooling/gpu-check.sh --prepare    on a dev machine with node_modules (and ideally nvcc): build the addon, the
#                                     one-file bundle of the check and a portable node into packages/kernels-cuda/
#                                     build/, so a BARE GPU machine needs nothing but this working tree plus
#                                     those two carried paths:
#                                       packages/kernels-cuda/build/Release/kvq_cuda.node
#                                       packages/kernels-cuda/build/gpu-carry
#
# On the GPU machine it works with whatever is there, in this order, and says which it used:
#   node:   `node` on PATH (>= 18), else the carried gpu-carry/node.xz (unpacked with xz or python3's lzma);
#   addon:  the carried/prebuilt kvq_cuda.node if it loads there, else a build with that machine's nvcc (sm_<its
#           arch>) using the carried Node / node-addon-api headers, else `pnpm build:gpu` if node_modules exist;
#   bundle: the carried gpu-carry/gpu-check.mjs, else `pnpm bundle:gpu-check` (needs node_modules; an offline
#           `npx -y pnpm@12.4.2 install --offline` is tried when they are missing).
# Exit code: that of the check (0 passed, 1 a check failed, 2 no usable GPU), 3 when it could not even start.
# Knobs: KVQ_GPU_PARITY=quick|full|off (default quick), KVQ_GPU_CHECK_NODE=carried (ignore node on PATH),
#        KVQ_GPU_CHECK_REBUILD=1 (build the addon here even if the prebuilt one loads), KVQ_CUBLAS=<libcublas path|0>.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKG="$ROOT/packages/kernels-cuda"
CARRY="$PKG/build/gpu-carry"
ADDON="$PKG/build/Release/kvq_cuda.node"
T0=$(date +%s)
say() { echo "[gpu-check +$(($(date +%s) - T0))s] $*"; }
die() {
  say "ERROR: $*"
  exit 3
}

# ---------------------------------------------------------------------------------------------------------------
# --prepare (dev machine)
# ---------------------------------------------------------------------------------------------------------------
if [[ "${1:-}" == "--prepare" ]]; then
  cd "$ROOT" || die "cannot cd to $ROOT"
  command -v pnpm >/dev/null || die "pnpm is not on PATH"
  [[ -d node_modules ]] || die "run pnpm install first"
  mkdir -p "$CARRY/include/node" "$CARRY/include/node-addon-api"
  if command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; then
    say "building the addon (sm_80, sm_89, sm_90 + PTX)"
    pnpm --filter @kvq/kernels-cuda build:gpu || die "build:gpu failed"
  else
    say "no nvcc here: the GPU machine will have to build the addon itself"
  fi
  say "bundling the check"
  pnpm --filter @kvq/kernels-cuda bundle:gpu-check >/dev/null || die "bundle:gpu-check failed"
  NODE_BIN=$(command -v node)
  if [[ ! -f "$CARRY/node.xz" || "$NODE_BIN" -nt "$CARRY/node.xz" ]]; then
    say "packing $NODE_BIN ($(node --version)) as gpu-carry/node.xz"
    xz -T0 -6 -c "$NODE_BIN" >"$CARRY/node.xz.tmp" && mv "$CARRY/node.xz.tmp" "$CARRY/node.xz" || die "xz failed"
  fi
  NODE_INC=$(node -p "require('path').resolve(process.execPath, '..', '..', 'include', 'node')")
  [[ -f "$NODE_INC/node_api.h" ]] || NODE_INC=/usr/include/node
  for h in node_api.h node_api_types.h js_native_api.h js_native_api_types.h; do
    cp "$NODE_INC/$h" "$CARRY/include/node/" || die "no Node header $h under $NODE_INC"
  done
  NAPI_DIR=$(cd "$PKG" && node -p "require('path').resolve(require('node-addon-api').include_dir)")
  cp "$NAPI_DIR"/napi.h "$NAPI_DIR"/napi-inl.h "$NAPI_DIR"/napi-inl.deprecated.h "$CARRY/include/node-addon-api/" 2>/dev/null ||
    cp "$NAPI_DIR"/napi*.h "$CARRY/include/node-addon-api/" || die "node-addon-api headers not found"
  du -sh "$CARRY" "$ADDON" 2>/dev/null
  say "ready. Carry: packages/kernels-cuda/build/Release/kvq_cuda.node packages/kernels-cuda/build/gpu-carry"
  exit 0
fi

# ---------------------------------------------------------------------------------------------------------------
# the check (GPU machine)
# ---------------------------------------------------------------------------------------------------------------
OUT_DIR=$(mkdir -p "${1:-${OUT:-./gpu-check-out}}" && cd "${1:-${OUT:-./gpu-check-out}}" && pwd) || die "cannot create the output directory"
exec > >(tee -a "$OUT_DIR/gpu-check.log") 2>&1
say "root $ROOT, results in $OUT_DIR"

{
  echo "date: $(date -u +%FT%TZ)"
  echo "uname: $(uname -a)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,compute_cap --format=csv 2>&1
  else
    echo "nvidia-smi: not available"
  fi
  if command -v nvcc >/dev/null; then nvcc --version | tail -2; else echo "nvcc: not on PATH"; fi
  for c in node xz python3 g++; do echo "$c: $(command -v $c || echo absent)"; done
  ls /usr/local/cuda/lib64/libcublas.so.* 2>/dev/null || echo "no libcublas under /usr/local/cuda/lib64"
} >"$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

# CUDA toolkit on PATH where it exists but is not on PATH.
for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
  [[ -x "$d/nvcc" ]] && ! command -v nvcc >/dev/null && export PATH="$d:$PATH"
done

# ---- node ----
NODE=""
if [[ "${KVQ_GPU_CHECK_NODE:-}" != "carried" ]] && command -v node >/dev/null && node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' 2>/dev/null; then
  NODE=$(command -v node)
elif [[ -f "$CARRY/node.xz" ]]; then
  mkdir -p /tmp/kvq-node
  if command -v xz >/dev/null; then
    xz -dc "$CARRY/node.xz" >/tmp/kvq-node/node
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$CARRY/node.xz" /tmp/kvq-node/node
  fi
  chmod +x /tmp/kvq-node/node
  /tmp/kvq-node/node --version >/dev/null 2>&1 && NODE=/tmp/kvq-node/node
fi
[[ -n "$NODE" ]] || die "no usable node (>= 18) on PATH and no carried $CARRY/node.xz (run tooling/gpu-check.sh --prepare on a dev machine)"
say "node $("$NODE" --version) ($NODE)"
export PATH="$(dirname "$NODE"):$PATH"

# cuBLAS for prefill GEMMs, where the dynamic loader would not find it by itself.
find_cublas() {
  local dirs=(/usr/local/cuda/lib64 /usr/local/cuda-*/lib64)
  local site
  for site in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
    dirs+=("$site"/nvidia/cu*/lib "$site"/nvidia/cublas/lib)
  done
  local d f
  for d in "${dirs[@]}"; do
    for f in "$d"/libcublas.so.*; do
      [[ -f "$f" ]] && echo "$f" && return 0
    done
  done
  return 1
}
if [[ -z "${KVQ_CUBLAS:-}" ]] && ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so'; then
  KVQ_CUBLAS=$(find_cublas) && export KVQ_CUBLAS
fi
say "cuBLAS: ${KVQ_CUBLAS:-default library search path}"

addon_loads() {
  [[ -f "$1" ]] && "$NODE" -e "const a=require(process.argv[1]); if (a.vendor !== 'cuda' || typeof a.probe !== 'function') process.exit(1); console.log(JSON.stringify(a.probe()))" "$1"
}

# ---- addon ----
if [[ "${KVQ_GPU_CHECK_REBUILD:-}" != "1" ]] && addon_loads "$ADDON" >"$OUT_DIR/probe.json" 2>"$OUT_DIR/probe.err"; then
  say "using the prebuilt addon: $(cat "$OUT_DIR/probe.json" | head -c 400)"
else
  say "the prebuilt addon is missing or does not load here ($(tail -c 300 "$OUT_DIR/probe.err" 2>/dev/null)); building"
  ARCH=$( (command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null) | head -1 | tr -d ' .')
  export KVQ_CUDA_ARCHS=${KVQ_CUDA_ARCHS:-${ARCH:-90}}
  if [[ -f "$CARRY/include/node/node_api.h" ]]; then
    export KVQ_NODEDIR="$CARRY" KVQ_NODE_ADDON_API_DIR="$CARRY/include/node-addon-api"
  fi
  KVQ_SKIP_SIM=1 "$NODE" "$PKG/scripts/build-native.mjs" || die "the addon does not build here"  # the CPU simulator is not needed there
  addon_loads "$ADDON" >"$OUT_DIR/probe.json" || die "the freshly built addon does not load"
  say "built: $(head -c 400 "$OUT_DIR/probe.json")"
fi
export KVQ_CUDA_ADDON="$ADDON"

# ---- the check bundle ----
BUNDLE="$CARRY/gpu-check.mjs"
if [[ ! -f "$BUNDLE" ]]; then
  say "no carried bundle; building it (needs node_modules)"
  cd "$ROOT" || die "cannot cd to $ROOT"
  if [[ ! -d node_modules ]]; then
    (command -v pnpm >/dev/null && pnpm install --offline --frozen-lockfile) ||
      npx -y pnpm@12.4.2 install --offline --frozen-lockfile ||
      die "node_modules are missing and an offline install failed; run tooling/gpu-check.sh --prepare where they exist and carry $CARRY"
  fi
  (cd "$PKG" && npx tsup --config tsup.gpu-check.config.ts >/dev/null) || die "bundling the check failed"
fi

# ---- run ----
say "running the check"
cd "$OUT_DIR" || die "cannot cd to $OUT_DIR"
"$NODE" "$BUNDLE" --out "$OUT_DIR" --parity "${KVQ_GPU_PARITY:-quick}"
rc=$?
say "done (exit $rc) in $(($(date +%s) - T0)) s; results: $OUT_DIR/gpu-check.json"
exit $rc
