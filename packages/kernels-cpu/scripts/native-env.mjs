// SPDX-License-Identifier: Apache-2.0
//
// What every node-gyp build of @kvq/kernels-cpu needs from this machine, found without downloading anything:
// Node's headers (`--nodedir`) and node-gyp itself. Shared by build-native.mjs (the local build) and
// prebuild.mjs (the platform packages).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root of @kvq/kernels-cpu. */
export const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Directories searched for Node's headers, in order (KVQ_NODEDIR, npm_config_nodedir, this node's prefix, /usr, /usr/local). */
export function nodeDirCandidates(env = process.env) {
  const candidates = [];
  if (env.KVQ_NODEDIR) candidates.push(env.KVQ_NODEDIR);
  if (env.npm_config_nodedir) candidates.push(env.npm_config_nodedir);
  // The running node's own prefix (official tarballs and distro packages ship the headers there).
  candidates.push(resolve(dirname(process.execPath), '..'));
  const prefix = process.config?.variables?.node_prefix;
  if (typeof prefix === 'string' && prefix.length > 0) candidates.push(prefix);
  candidates.push('/usr', '/usr/local');
  return candidates;
}

/** A directory D such that D/include/node/node_api.h exists, without downloading anything; undefined if none. */
function findNodeDir(env = process.env) {
  for (const dir of nodeDirCandidates(env)) {
    if (existsSync(join(dir, 'include', 'node', 'node_api.h')) && existsSync(join(dir, 'include', 'node', 'common.gypi'))) {
      return dir;
    }
  }
  return undefined;
}

/** The message for a machine without Node headers. */
function noNodeDirMessage() {
  return (
    'no Node.js headers found (looked for include/node/node_api.h under KVQ_NODEDIR, npm_config_nodedir, ' +
    `${resolve(dirname(process.execPath), '..')}, /usr and /usr/local). Install your distribution's Node ` +
    'development headers (e.g. the nodejs package of the official tarball ships them) or set KVQ_NODEDIR. ' +
    'This build never downloads headers.'
  );
}

/** Absolute path of node-gyp's CLI (a devDependency of this package); throws when it is not installed. */
function resolveNodeGyp() {
  return createRequire(join(pkgDir, 'package.json')).resolve('node-gyp/bin/node-gyp.js');
}

/**
 * What a node-gyp build needs, found locally: `{ nodedir, nodeGyp }` (the Node headers' folder and node-gyp's CLI).
 * Calls `fail(message)` (which must not return) when either is missing.
 */
export function nodeGypToolchain(fail) {
  const nodedir = findNodeDir();
  if (!nodedir) fail(noNodeDirMessage());
  let nodeGyp;
  try {
    nodeGyp = resolveNodeGyp();
  } catch (cause) {
    fail(`node-gyp is not installed (a devDependency of @kvq/kernels-cpu): ${cause}`);
  }
  return { nodedir, nodeGyp };
}

/**
 * What a compiled binary is built for, read from its header: `{ format: 'elf' | 'mach-o' | 'pe', arch }` with arch
 * `'x64'`, `'arm64'` or `'other(<n>)'`; `undefined` for anything else. Used to check a prebuilt binary before
 * it is copied into a platform package.
 */
export function binaryTarget(buf) {
  if (buf.length >= 20 && buf.readUInt32BE(0) === 0x7f454c46) {
    const le = buf[5] === 1;
    const machine = le ? buf.readUInt16LE(18) : buf.readUInt16BE(18);
    return { format: 'elf', arch: machine === 62 ? 'x64' : machine === 183 ? 'arm64' : `other(${machine})` };
  }
  if (buf.length >= 8 && buf.readUInt32LE(0) === 0xfeedfacf) {
    const cpu = buf.readUInt32LE(4);
    return { format: 'mach-o', arch: cpu === 0x01000007 ? 'x64' : cpu === 0x0100000c ? 'arm64' : `other(${cpu})` };
  }
  if (buf.length >= 64 && buf.readUInt16LE(0) === 0x5a4d) {
    const pe = buf.readUInt32LE(60);
    if (buf.length >= pe + 6 && buf.readUInt32LE(pe) === 0x00004550) {
      const machine = buf.readUInt16LE(pe + 4);
      return { format: 'pe', arch: machine === 0x8664 ? 'x64' : machine === 0xaa64 ? 'arm64' : `other(${machine})` };
    }
  }
  return undefined;
}
