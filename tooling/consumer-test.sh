#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# "From npm, on a fresh machine": installs kvq the way a user does and checks they get the native CPU backend
# from the prebuilt platform package, with no C++ compiler anywhere on PATH.
#  1. builds the linux-x64-gnu platform package's binary (scripts/prebuild.mjs; skipped when it is newer than
#     csrc/ and binding.gyp) and the TypeScript of every package (pnpm build);
#  2. `pnpm pack`s every public package, @kvq/model-tiny, the CLI and server apps and the linux-x64-gnu platform
#     package (the other five platform packages are not in any registry: npm must skip them as optional);
#  3. `npm install`s the tarballs into an empty project with PATH = node, npm, npx, sh, bash, env only;
#  4. runs the @kvq/engine README example (LLM.create / generate / stream / score) on kvq-tiny;
#  5. asserts from `npx kvq env --json` that the backend is the native `cpu` one loaded from the platform package;
#  6. asserts `npx kvq generate --temperature 0 --json ...` gives the same token ids as the workspace's CLI.
# Exits non-zero on any failure. Usage (repository root, linux-x64 glibc): tooling/consumer-test.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
START=$(date +%s)
say() { printf '[consumer-test %ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
die() { printf '[consumer-test] FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(node -p 'process.platform + "-" + process.arch')" = linux-x64 ] || die "runs on linux-x64 (the platform package it builds)"
PLAT=packages/kernels-cpu/npm/linux-x64-gnu
BIN=$PLAT/kvq_cpu.node
if [ -f "$BIN" ] && [ -z "$(find packages/kernels-cpu/csrc packages/kernels/csrc packages/kernels-cpu/binding.gyp -newer "$BIN" | head -1)" ]; then
  say "reusing $BIN (newer than its csrc/, @kvq/kernels csrc/ and binding.gyp)"
else
  say "building $BIN"
  node packages/kernels-cpu/scripts/prebuild.mjs --platform linux-x64-gnu >/tmp/kvq-prebuild.$$.log 2>&1 || { tail -30 /tmp/kvq-prebuild.$$.log; die "prebuild failed"; }
fi
say "pnpm build"
npx -y pnpm@12.4.2 build >/tmp/kvq-build.$$.log 2>&1 || { tail -40 /tmp/kvq-build.$$.log; die "pnpm build failed"; }

T=$(mktemp -d); trap 'rm -rf "$T" /tmp/kvq-prebuild.$$.log /tmp/kvq-build.$$.log' EXIT
say "pnpm pack into $T/packs"
# packages/*/ holds no platform package (they live in packages/kernels-cpu/npm/<triple>/, the napi-rs layout):
# this machine's is packed on purpose; the other five are deliberately absent.
for p in packages/*/ apps/*/ "$PLAT/"; do
  case "$p" in *bench-peer*) continue ;; esac                   # private, needs llama.cpp
  (cd "$p" && npx -y pnpm@12.4.2 pack --pack-destination "$T/packs" >/dev/null) || die "pnpm pack $p failed"
done
tar -tzf "$T"/packs/kvq-kernels-cpu-linux-x64-gnu-*.tgz | grep -x 'package/kvq_cpu.node' >/dev/null || die "the platform tarball has no kvq_cpu.node"

mkdir -p "$T/app" "$T/bin"
for t in node npm npx sh bash env; do ln -s "$(command -v $t)" "$T/bin/$t"; done
for c in cc gcc g++ c++ clang clang++ make python3; do PATH="$T/bin" command -v $c >/dev/null && die "$c is on the consumer PATH"; done
cd "$T/app"
PATH="$T/bin" npm init -y >/dev/null
say "npm install $(ls "$T"/packs | wc -l) tarballs (PATH: node npm npx sh bash env)"
PATH="$T/bin" npm install --no-audit --no-fund --loglevel=warn "$T"/packs/*.tgz >"$T/npm.log" 2>&1 || { cat "$T/npm.log"; die "npm install failed"; }
for other in darwin-arm64 darwin-x64 linux-arm64-gnu linux-x64-musl win32-x64-gnu; do
  [ ! -e "node_modules/@kvq/kernels-cpu-$other" ] || die "npm installed @kvq/kernels-cpu-$other on linux-x64"
done
[ -f node_modules/@kvq/kernels-cpu-linux-x64-gnu/kvq_cpu.node ] || die "the platform package is not installed"
[ ! -e node_modules/@kvq/kernels-cpu/build ] || die "@kvq/kernels-cpu has a build/ folder: it was compiled at install"

say "the @kvq/engine README example"
cat > readme-example.mjs <<'JS'
import { LLM } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';

const llm = await LLM.create({ model: modelTinyPath, kvCacheDtype: 'fp8', kvCacheMemory: 256 << 20 });
const [out] = await llm.generate('Once upon a time', { temperature: 0, maxTokens: 32 });
console.log(out.outputs[0].text, out.outputs[0].finishReason);
for await (const delta of llm.stream('Once upon a time', { maxTokens: 32, seed: 1 })) process.stdout.write(delta.text);
const { nllSum, count } = await llm.score('Tom and his dog went to the park.'); // perplexity = exp(nllSum / count)
console.log(`\nperplexity ${Math.exp(nllSum / count).toFixed(3)} over ${count} tokens`);
if (!(out.outputs[0].tokenIds.length > 0) || !Number.isFinite(nllSum) || !(count > 0)) throw new Error('empty result');
llm.dispose(); // stops the native backend's threads
JS
PATH="$T/bin" node readme-example.mjs || die "the engine README example failed"

say "npx kvq env --json"
PATH="$T/bin" npx kvq env --json >"$T/env.json" || die "kvq env failed"
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const want = require("path").join(process.argv[2], "node_modules", "@kvq", "kernels-cpu-linux-x64-gnu", "kvq_cpu.node");
const b = r.backend ?? {};
if (b.chosen !== "cpu") { console.error("backend:", JSON.stringify(b, null, 2)); process.exit(1); }
if (b.info?.binary !== want) { console.error(`binary ${b.info?.binary}, expected ${want}`); process.exit(1); }
console.log(`backend cpu: ${b.info.description}, binary ${b.info.binary}`);
' "$T/env.json" "$T/app" || die "kvq env does not report the native cpu backend from the platform package"

ARGS=(generate --max-tokens 24 --temperature 0 --kv-cache-dtype fp8 --json "In the beginning God")
say "npx kvq ${ARGS[*]}"
PATH="$T/bin" npx kvq "${ARGS[@]}" >"$T/consumer.json" || die "kvq generate failed in the consumer project"
(cd "$ROOT" && node apps/cli/dist/bin.js "${ARGS[@]}") >"$T/workspace.json" || die "kvq generate failed in the workspace"
node -e '
const [a, b] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8")));
const ids = (j) => JSON.stringify(j.token_ids);
if (!Array.isArray(a.token_ids) || a.token_ids.length === 0) { console.error("no token_ids in", a); process.exit(1); }
if (ids(a) !== ids(b)) { console.error(`consumer  ${ids(a)}\nworkspace ${ids(b)}`); process.exit(1); }
console.log(`same ${a.token_ids.length} tokens: ${JSON.stringify(a.text)}`);
' "$T/consumer.json" "$T/workspace.json" || die "the consumer's tokens differ from the workspace's"
say "PASS"
