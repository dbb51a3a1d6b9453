import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { BenchPeerError } from '../errors.js';
import type { PeerModule } from './types.js';

/** The exact node-llama-cpp version the harness is written and measured against. */
export const PEER_VERSION = '3.21.1';
/** The npm package of the peer. */
export const PEER_PACKAGE = 'node-llama-cpp';

/** node-llama-cpp's prebuilt CPU binary package for each platform-arch (they ship inside the registry packages). */
const PREBUILT: Record<string, string> = {
  'linux-x64': '@node-llama-cpp/linux-x64',
  'linux-arm64': '@node-llama-cpp/linux-arm64',
  'darwin-x64': '@node-llama-cpp/mac-x64',
  'darwin-arm64': '@node-llama-cpp/mac-arm64-metal',
  'win32-x64': '@node-llama-cpp/win-x64',
  'win32-arm64': '@node-llama-cpp/win-arm64',
};

/**
 * The folder node-llama-cpp is installed into: `KVQ_PEER_DIR`, else `~/.cache/kvq/peer/node-llama-cpp-3.21.1`.
 * Outside the workspace on purpose: the peer never enters a package.json, the lockfile or the default install.
 */
export function defaultPeerDir(): string {
  return process.env.KVQ_PEER_DIR ?? join(homedir(), '.cache', 'kvq', 'peer', `${PEER_PACKAGE}-${PEER_VERSION}`);
}

/** The prebuilt binary package for this platform, or undefined. */
export function prebuiltPackage(platform: string = process.platform, arch: string = process.arch): string | undefined {
  return PREBUILT[`${platform}-${arch}`];
}

/** Installed version of node-llama-cpp in `dir`, or undefined when it is not installed there. */
export function installedPeerVersion(dir: string = defaultPeerDir()): string | undefined {
  const pkg = join(dir, 'node_modules', PEER_PACKAGE, 'package.json');
  if (!existsSync(pkg)) return undefined;
  try {
    return (JSON.parse(readFileSync(pkg, 'utf8')) as { version?: string }).version;
  } catch {
    return undefined;
  }
}

/** Whether the pinned node-llama-cpp and this platform's prebuilt binary are installed in `dir`. */
export function isPeerInstalled(dir: string = defaultPeerDir()): boolean {
  const prebuilt = prebuiltPackage();
  return installedPeerVersion(dir) === PEER_VERSION && prebuilt !== undefined && existsSync(join(dir, 'node_modules', ...prebuilt.split('/'), 'package.json'));
}

/** The npm arguments {@link installPeer} runs (exported for the docs and tests). */
export function peerInstallArgs(dir: string): string[] {
  const prebuilt = prebuiltPackage();
  if (!prebuilt) {
    throw new BenchPeerError('UNSUPPORTED_PLATFORM', `node-llama-cpp ships no prebuilt CPU binary for ${process.platform}-${process.arch} that this harness knows (${Object.keys(PREBUILT).join(', ')})`);
  }
  // --ignore-scripts: node-llama-cpp's postinstall only test-loads the binary and, when that fails, builds llama.cpp
  //   from source; the prebuilt binary is found at run time without it (getLlama({ build: 'never' }) here), so no
  //   install script runs and nothing is compiled.
  // --omit=optional + the one prebuilt package: skip the CUDA/Vulkan binaries (hundreds of MB) we never load.
  return [
    'install',
    '--no-save',
    '--no-package-lock',
    '--ignore-scripts',
    '--omit=optional',
    '--no-audit',
    '--no-fund',
    '--prefix',
    dir,
    `${PEER_PACKAGE}@${PEER_VERSION}`,
    `${prebuilt}@${PEER_VERSION}`,
  ];
}

/**
 * Install the pinned node-llama-cpp (and only this platform's prebuilt CPU binary) into `dir` with npm, unless it
 * is already there. Needs the npm registry (network); nothing is built from source.
 * @returns the folder
 * @throws BenchPeerError `UNSUPPORTED_PLATFORM`, `PEER_INSTALL_FAILED` (npm's output tail in the message), `IO_ERROR`
 */
export async function installPeer(options: { dir?: string; log?: (line: string) => void } = {}): Promise<string> {
  const dir = options.dir ?? defaultPeerDir();
  if (isPeerInstalled(dir)) return dir;
  const args = peerInstallArgs(dir);
  try {
    await mkdir(dir, { recursive: true });
    // A package.json of its own, so npm treats the folder as the project and never walks up into a workspace.
    await writeFile(join(dir, 'package.json'), `${JSON.stringify({ name: 'kvq-peer-cache', private: true, description: 'node-llama-cpp for @kvq/bench-peer (not a workspace package)' }, null, 2)}\n`);
  } catch (cause) {
    throw new BenchPeerError('IO_ERROR', `cannot prepare the peer folder ${dir}: ${(cause as Error).message}`, { file: dir, cause });
  }
  options.log?.(`npm ${args.join(' ')}`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const output: string[] = [];
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(npm, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], shell: process.platform === 'win32' });
    const take = (b: Buffer) => {
      const s = b.toString();
      output.push(s);
      for (const line of s.split('\n')) if (line.trim()) options.log?.(line);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', reject);
    child.on('close', (c) => resolve(c ?? 1));
  }).catch((cause: unknown) => {
    throw new BenchPeerError('PEER_INSTALL_FAILED', `could not run npm to install ${PEER_PACKAGE}@${PEER_VERSION}: ${(cause as Error).message}`, { file: dir, cause });
  });
  if (code !== 0 || !isPeerInstalled(dir)) {
    const tail = output.join('').slice(-2000);
    throw new BenchPeerError('PEER_INSTALL_FAILED', `npm install of ${PEER_PACKAGE}@${PEER_VERSION} into ${dir} failed (exit ${code}):\n${tail}`, { file: dir });
  }
  return dir;
}

/**
 * Import node-llama-cpp from `dir` (never from the workspace).
 * @throws BenchPeerError `PEER_NOT_INSTALLED` when the pinned version is not there
 */
export async function importPeer(dir: string = defaultPeerDir()): Promise<PeerModule> {
  const version = installedPeerVersion(dir);
  if (version !== PEER_VERSION) {
    const found = version === undefined ? 'it is not installed there' : `version ${version} is installed there`;
    throw new BenchPeerError(
      'PEER_NOT_INSTALLED',
      `${PEER_PACKAGE}@${PEER_VERSION} is needed in ${dir} but ${found}; run \`pnpm --filter @kvq/bench-peer peer:install\` (or \`kvq bench --peer\`, which installs it)`,
      { file: dir },
    );
  }
  const entry = createRequire(join(dir, 'package.json')).resolve(PEER_PACKAGE);
  return (await import(pathToFileURL(entry).href)) as PeerModule;
}
