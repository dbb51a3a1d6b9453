import { CliError, exitCodeFor } from './errors.js';
import { COMMANDS, type CliIo } from './registry.js';

const VERSION = '0.1.0';

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const rows = COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n');
  return `kvq ${VERSION}: FP8 KV-cache quantization for LLM inference in Node

Usage: kvq <command> [options]

Commands:
${rows}

Run 'kvq <command> --help' for a command's options. Global: --verbose (full stack traces), --version.
`;
}

/**
 * Runs the CLI and returns the exit status (0 ok, 2 usage error, 1 runtime error). Never throws.
 * @param argv arguments after the program name
 */
export async function main(argv: string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin }): Promise<number> {
  const verbose = argv.includes('--verbose');
  const args = argv.filter((a) => a !== '--verbose');
  const [name, ...rest] = args;
  try {
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      io.stdout.write(usage());
      return 0;
    }
    if (name === '--version' || name === '-v') {
      io.stdout.write(`${VERSION}\n`);
      return 0;
    }
    const entry = COMMANDS.find((c) => c.name === name);
    if (!entry) throw new CliError('USAGE', `unknown command ${JSON.stringify(name)}; run 'kvq --help'`);
    const command = await entry.load();
    await command.run(rest, io);
    return 0;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    io.stderr.write(`kvq: ${message}\n`);
    if (verbose && error instanceof Error && error.stack) io.stderr.write(`${error.stack}\n`);
    return exitCodeFor(error);
  }
}
