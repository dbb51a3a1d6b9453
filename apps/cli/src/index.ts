/** The kvq command line, as a library: run it with `main(argv)` (returns the exit status). */
export { main } from './main.js';
export { CliError, exitCodeFor, type CliErrorCode } from './errors.js';
export { COMMANDS, type CliIo, type CommandEntry, type CommandModule } from './registry.js';
