import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { choice, derived, flag, flagsOf, optionalText, readSettings, tcpPort, text, whole, type SettingsOf } from '../../command/settings.js';
import { createLogger } from '../../command/log.js';
import { CHECKPOINT_INTERVAL_MS } from '../../ledger/chain.js';
import { ALERT_SETTINGS } from '../../anomalies/alert-flags.js';
import { createCollector, CollectorConfigError, type Collector } from '../collector/collector.js';
import { untilAborted, type CommandIO } from '../../command/io.js';

export const COLLECTOR_SETTINGS = {
  grpcPort: tcpPort({ name: 'grpc-port', default: 9400, help: 'gRPC ingest from sidecars (Sync)' }),
  httpPort: tcpPort({ name: 'http-port', default: 9401, help: 'query API, live tail, /metrics, /livez, /readyz' }),
  storeDir: text({ name: 'store', default: './.auditmesh/collector', help: 'embedded LMDB store folder' }),
  tokenFile: optionalText({ name: 'token-file', help: 'tokens accepted from sidecars, one a line; re-read when it changes' }),
  insecure: flag({ name: 'insecure', default: false, help: 'accept sidecars without a token (local, trusted setups only)' }),
  bind: derived({ name: 'bind', type: 'string', help: 'listen address (default 127.0.0.1; 0.0.0.0 in Kubernetes)' }, (values, env) => (values.bind as string | undefined) ?? (env.KUBERNETES_SERVICE_HOST !== undefined ? '0.0.0.0' : '127.0.0.1')),
  heartbeatIntervalMs: whole({ name: 'heartbeat-interval-ms', default: CHECKPOINT_INTERVAL_MS, help: "the sidecars' heartbeat interval (their --checkpoint-interval-ms): 3 missed is stale" }),
  logLevel: choice<'info' | 'warn' | 'error' | 'silent'>({ name: 'log-level', default: 'info', choices: ['info', 'warn', 'error', 'silent'], help: 'structured log verbosity (stderr)' }),
  // Fleet-wide spike and first-seen detection (GET /v1/anomalies), tuned like the sidecar's.
  alerts: ALERT_SETTINGS,
};

export const COLLECTOR_FLAGS: readonly FlagSpec[] = flagsOf(COLLECTOR_SETTINGS);

export const COLLECTOR_HELP = formatHelp(
  'auditmesh collector [flags]',
  "Runs the control-plane collector: sidecars stream their journals to it over gRPC; it verifies\nevery batch (Merkle root, hash chain, signature, contiguous numbers), stores it in an embedded\nLMDB store, acks it, and answers queries and live tails over HTTP. Without --token-file it\nrefuses to start unless --insecure is given.",
  COLLECTOR_FLAGS,
);

/** `auditmesh collector`: serves until aborted (SIGTERM/SIGINT), then closes and exits 0. */
export async function collectorMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(COLLECTOR_HELP);
    return 0;
  }
  let settings: SettingsOf<typeof COLLECTOR_SETTINGS>;
  try {
    const parsed = parseFlags(COLLECTOR_FLAGS, argv, io.env);
    if (parsed.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    settings = readSettings(COLLECTOR_SETTINGS, parsed.values, io.env);
    if (settings.tokenFile === undefined && !settings.insecure) {
      throw new UsageError('no --token-file: the collector would accept records from anyone; give --token-file FILE, or --insecure for a local, trusted setup');
    }
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh collector: ${err.message}\n(see auditmesh collector --help)\n`);
    return 2;
  }
  const { logLevel, ...config } = settings;
  const log = createLogger(logLevel, (line) => io.stderr.write(line));
  let collector: Collector;
  try {
    collector = await createCollector(config, log);
  } catch (err) {
    io.stderr.write(`auditmesh collector: cannot start: ${(err as Error).message}\n`);
    return err instanceof CollectorConfigError ? 2 : 1;
  }
  await untilAborted(io.signal);
  log('info', 'stopping');
  await collector.close();
  return 0;
}
