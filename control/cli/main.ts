import { sidecarMain } from '../../proxy/main.js';
import { tailMain } from './tail.js';
import { demoMain } from './demo.js';
import { verifyMain } from './verify.js';
import type { CommandIO, CommandRun } from './io.js';

interface Command {
  summary: string;
  run: CommandRun;
}

const COMMANDS: Record<string, Command> = {
  sidecar: { summary: 'run the sidecar in front of one app', run: sidecarMain },
  tail: { summary: 'stream records live from a sidecar (--admin URL)', run: tailMain },
  verify: { summary: 'verify a journal offline: records, Merkle roots, hash chain, signatures', run: verifyMain },
  demo: { summary: 'a whole local mesh on embedded defaults: services with sidecars, traffic, live records', run: demoMain },
};

export const USAGE = `auditmesh: the audit layer for service-to-service traffic

Usage: auditmesh <command> [flags]

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`)
  .join('\n')}

Run 'auditmesh <command> --help' for a command's flags.
Exit codes: 0 success, 1 what was checked failed, 2 bad usage.
`;

/** The CLI's entry: dispatches to a command and returns its exit code. SIGINT/SIGTERM abort the command. */
export async function main(argv: readonly string[]): Promise<number> {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const io: CommandIO = { stdout: process.stdout, stderr: process.stderr, env: process.env, signal: controller.signal };
  try {
    return await dispatch(argv, io);
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

/** Runs one command with the given io; returns its exit code. */
export async function dispatch(argv: readonly string[], io: CommandIO): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === 'version') {
    io.stdout.write('auditmesh 0.1.0\n');
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    io.stderr.write(`auditmesh: unknown command ${JSON.stringify(name)}\n\n${USAGE}`);
    return 2;
  }
  return command.run(rest, io);
}
