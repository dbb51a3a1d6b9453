#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Proves @kvq/kernels-cuda builds from its own npm tarball, outside the monorepo: packs @kvq/fp8, @kvq/cache,
# @kvq/kernels and @kvq/kernels-cuda (pnpm pack: workspace/catalog versions replaced as on publish), installs the
# tarballs with npm into an empty folder (node-addon-api from npm's cache when it is there, else the registry), and
# runs the package's own build there: the CUDA simulator addons (g++) and, when nvcc is present, the CUDA kernels for
# KVQ_CUDA_ARCHS (default 90 here: one arch is enough to prove the sources and includes resolve). The shared FP8
# header must come from the installed @kvq/kernels (csrc/fp8.h), not from a monorepo path; the check fails if the
# build log mentions the checkout.
#
#   tooling/check-cuda-tarball.sh            # from the repository root; needs `pnpm install` done
#   KVQ_REQUIRE_GPU_COMPILERS=1 tooling/check-cuda-tarball.sh   # CI: nvcc must be there
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PNPM=${PNPM:-"npx -y $(node -p "require('$ROOT/package.json').packageManager")"}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvq-cuda-tarball-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say() { echo "[check-cuda-tarball] $*"; }

cd "$ROOT"
say "building the TypeScript of the packed packages"
KVQ_BUILD_DTS=1 $PNPM exec turbo run build --filter=@kvq/kernels-cuda... --output-logs=errors-only
mkdir -p "$WORK/packs" "$WORK/app"
for p in fp8 cache kernels kernels-cuda; do
  (cd "$ROOT/packages/$p" && $PNPM pack --pack-destination "$WORK/packs" >/dev/null)
done
ls "$WORK/packs"
tar -tzf "$WORK/packs"/kvq-kernels-0*.tgz | grep -x 'package/csrc/fp8.h' >/dev/null || { say "FAIL: @kvq/kernels's tarball lacks csrc/fp8.h"; exit 1; }

cd "$WORK/app"
echo '{"name":"kvq-cuda-tarball-check","private":true,"type":"module"}' >package.json
say "npm install (tarballs; node-addon-api from the npm cache or registry)"
npm install --prefer-offline --no-audit --no-fund --loglevel=error "$WORK"/packs/*.tgz
PKG="$WORK/app/node_modules/@kvq/kernels-cuda"
[[ -L "$PKG" ]] && { say "FAIL: $PKG is a link, not an installed copy"; exit 1; }

say "building @kvq/kernels-cuda in $PKG (KVQ_CUDA_ARCHS=${KVQ_CUDA_ARCHS:-90})"
KVQ_CUDA_ARCHS=${KVQ_CUDA_ARCHS:-90} node "$PKG/scripts/build-native.mjs" 2>&1 | tee "$WORK/build.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || { say "FAIL: the build failed"; exit 1; }
if grep -q "$ROOT" "$WORK/build.log"; then say "FAIL: the build used files of the checkout $ROOT"; exit 1; fi
for w in 32 64; do
  [[ -f "$PKG/build/Release/kvq_sim_w$w.node" ]] || { say "FAIL: no simulator addon kvq_sim_w$w.node"; exit 1; }
done

say "running a kernel of the installed package on its simulator (warp 32): linear, checked against the exact result"
node --input-type=module -e "
const { createSimBackend } = await import('@kvq/kernels-cuda/testing');
const b = createSimBackend({ warp: 32 });
const out = new Float32Array(1);
b.linear({ x: new Float32Array([1, 2]), weight: { dtype: 'f32', data: new Float32Array([3, 4]), rows: 1, cols: 2 }, out, rows: 1 });
if (out[0] !== 11) throw new Error('linear gave ' + out[0] + ' instead of 11');
b.dispose?.();
console.log('simulator linear ok');
" || { say "FAIL: the installed package's simulator backend does not run"; exit 1; }
say "OK: @kvq/kernels-cuda builds from its tarball (shared header from @kvq/kernels $(node -p "require('@kvq/kernels/package.json').version"))"
