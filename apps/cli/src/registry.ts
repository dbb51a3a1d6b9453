/** Output streams a command writes to (injectable for tests). */
export interface CliIo {
  readonly stdout: { write(text: string): unknown; isTTY?: boolean };
  readonly stderr: { write(text: string): unknown };
}

/** A command module: parses its own arguments and runs. */
export interface CommandModule {
  run(argv: string[], io: CliIo): Promise<void>;
}

/** One row of the command table; modules are imported lazily so `kvq --help` loads nothing heavy. */
export interface CommandEntry {
  readonly name: string;
  readonly summary: string;
  readonly load: () => Promise<CommandModule>;
}

/** Every command the CLI knows, in help order. */
export const COMMANDS: readonly CommandEntry[] = [
  {
    name: 'fp8',
    summary: 'Encode numbers to FP8 in every format and show the round trip',
    load: () => import('./commands/fp8/index.js'),
  },
];
