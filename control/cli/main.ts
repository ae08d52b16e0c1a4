import { sidecarMain } from '../../proxy/main.js';
import { tailMain } from './tail.js';
import { verifyMain } from './verify.js';
import type { CommandIO, CommandRun } from '../../command/io.js';
import { VERSION } from '../../command/version.js';

interface Command {
  summary: string;
  run: CommandRun;
}

const COMMANDS: Record<string, Command> = {
  sidecar: { summary: 'run the sidecar in front of one app', run: sidecarMain },
  collector: { summary: 'run the control-plane collector: gRPC ingest, verification, store, query API', run: async (argv, io) => (await import('./collector.js')).collectorMain(argv, io) },
  query: { summary: "search the collector's records (--collector URL)", run: async (argv, io) => (await import('./query.js')).queryMain(argv, io) },
  reconcile: { summary: 'which calls the two ends disagree on, from the collector (exit 1 when any is unmatched or mismatched)', run: async (argv, io) => (await import('./reconcile.js')).reconcileMain(argv, io) },
  tail: { summary: 'stream records live from a sidecar (--admin URL) or the collector (--collector URL)', run: tailMain },
  verify: { summary: 'verify a journal, a collector store or an exported bundle offline: records, Merkle roots, hash chain, signatures', run: verifyMain },
  // --follow prints records as they are stored, as NDJSON for log shippers (export-follow.ts); otherwise a bundle (export.ts).
  export: { summary: 'write a portable evidence bundle (records, proofs, signed heads, keys) for offline verify, or --follow: records as NDJSON', run: async (argv, io) => (argv.includes('--follow') ? (await import('./export-follow.js')).exportFollowMain(argv, io) : (await import('./export.js')).exportMain(argv, io)) },
  demo: { summary: 'a whole local mesh on embedded defaults: a collector, services with sidecars shipping to it, traffic, live records', run: async (argv, io) => (await import('../demo/demo.js')).demoMain(argv, io) },
  // Loaded on use: their dependencies (TLS certificates, YAML) would slow every other command's start.
  injector: { summary: 'run the sidecar-injection admission webhook (HTTPS)', run: async (argv, io) => (await import('./injector.js')).injectorMain(argv, io) },
  inject: { summary: 'inject the sidecar into the pods of a manifest offline (-f FILE, to stdout)', run: async (argv, io) => (await import('./inject.js')).injectMain(argv, io) },
  install: { summary: "print the control plane's Kubernetes manifests (| kubectl apply -f -)", run: async (argv, io) => (await import('./install.js')).installMain(argv, io) },
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
    io.stdout.write(`auditmesh ${VERSION}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    io.stderr.write(`auditmesh: unknown command ${JSON.stringify(name)}\n\n${USAGE}`);
    return 2;
  }
  return command.run(rest, io);
}
