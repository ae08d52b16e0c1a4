import { formatHelp, UsageError } from '../command/flags.js';
import { parseSidecarConfig, SIDECAR_FLAGS } from './config.js';
import { startSidecar } from './sidecar.js';
import { createLogger } from '../command/log.js';
import { untilAborted, type CommandIO } from '../command/io.js';

// The sidecar's one entry point for the control plane: the `sidecar` command and the demo's embedded sidecars.
export { sidecarConfig } from './config.js';
export { startSidecar, type Sidecar } from './sidecar.js';

export const SIDECAR_HELP = formatHelp(
  'auditmesh sidecar [flags]',
  'Runs the sidecar in front of one app: inbound listener → app, outbound listener as HTTP proxy,\nevery exchange recorded in the local journal. Each flag is also an environment variable.',
  SIDECAR_FLAGS,
);

/** An error's message, with its cause's when it adds one (the errno behind "cannot open journal"). */
function startupMessage(err: unknown): string {
  const message = (err as Error)?.message ?? String(err);
  const cause = (err as Error)?.cause as Error | undefined;
  return cause?.message !== undefined && !message.includes(cause.message) ? `${message}: ${cause.message}` : message;
}

/** `auditmesh sidecar`: config from flags and env, run until aborted (SIGTERM/SIGINT), drain, exit 0. */
export async function sidecarMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(SIDECAR_HELP);
    return 0;
  }
  let config;
  try {
    config = parseSidecarConfig(argv, io.env);
    // Test-only fault injection (test/faults.test.ts), read here once rather than by a worker per batch.
    const crashFile = io.env.AUDITMESH_TEST_SEAL_CRASH_FILE;
    if (crashFile !== undefined) config = Object.freeze({ ...config, testSealCrashFile: crashFile });
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`auditmesh sidecar: ${err.message}\n(see auditmesh sidecar --help)\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.logLevel, (line) => io.stderr.write(line));
  let sidecar;
  try {
    sidecar = await startSidecar(config, log);
  } catch (err) {
    // A refusal to start (journal held by another process, unreadable key) is one line, not a stack.
    io.stderr.write(`auditmesh sidecar: cannot start: ${startupMessage(err)}\n`);
    return 1;
  }
  await untilAborted(io.signal);
  log('info', 'stopping: draining connections and flushing the journal');
  await sidecar.close();
  return 0;
}
