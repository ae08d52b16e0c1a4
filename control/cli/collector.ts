import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { durationMs, formatHelp, parseFlags, port, UsageError, type FlagSpec } from '../../proxy/config/flags.js';
import { DEFAULT_TRUST_DOMAIN } from '../../proxy/identity/spiffe-id.js';
import { createLogger } from '../../proxy/log.js';
import { CHECKPOINT_INTERVAL_MS } from '../../proxy/journal/journal.js';
import { ALERT_FLAGS, alertOptionsFromFlags } from '../../proxy/alerts/alert-flags.js';
import { createCollector, CollectorConfigError, type Collector } from '../collector/collector.js';
import { IN_CLUSTER_JWKS_URL } from '../collector/service-account-tokens.js';
import { podNamespace, serviceAccountKeys } from './collector-identity.js';
import { serviceNames } from '../collector/serving-identity.js';
import { DEFAULT_MAX_TAIL_SUBSCRIBERS } from '../../proxy/metrics/tail-streams.js';
import { untilAborted, type CommandIO } from './io.js';

export const COLLECTOR_FLAGS: readonly FlagSpec[] = [
  { name: 'grpc-port', type: 'int', default: '9400', help: 'gRPC ingest from sidecars (Sync)' },
  { name: 'http-port', type: 'int', default: '9401', help: 'query API, live tail, /metrics, /livez, /readyz' },
  { name: 'store', type: 'string', default: './.auditmesh/collector', help: 'embedded LMDB store folder' },
  { name: 'token-file', type: 'string', help: 'shared tokens accepted from sidecars, one a line (local runs); re-read when it changes' },
  { name: 'service-account-issuer', type: 'string', help: "expected iss of the sidecars' ServiceAccount tokens (default in a pod: the issuer of the collector's own token)" },
  { name: 'service-account-jwks', type: 'string', help: `the issuer's public keys, FILE or URL (default in a pod: the API server's ${IN_CLUSTER_JWKS_URL})` },
  { name: 'trust-domain', type: 'string', default: DEFAULT_TRUST_DOMAIN, help: 'the SPIFFE trust domain of issued identities' },
  { name: 'ca-dir', type: 'string', default: './.auditmesh/ca', help: 'the mesh CA: ca.crt and ca.key (0600); in Kubernetes the Secret every replica mounts; created at first start only for local runs' },
  { name: 'cert-ttl', type: 'string', default: '24h', help: 'lifetime of issued workload certificates (renewed at half-life)' },
  { name: 'insecure', type: 'boolean', default: 'false', help: 'accept sidecars without a token (local, trusted setups only)' },
  { name: 'bind', type: 'string', help: 'listen address (default 127.0.0.1; 0.0.0.0 in Kubernetes)' },
  { name: 'heartbeat-interval-ms', type: 'int', default: String(CHECKPOINT_INTERVAL_MS), help: "the sidecars' heartbeat interval (their --checkpoint-interval-ms): 3 missed is stale" },
  { name: 'max-tail-subscribers', type: 'int', default: String(DEFAULT_MAX_TAIL_SUBSCRIBERS), help: '/v1/tail subscribers at once; past it 503' },
  { name: 'log-level', type: 'string', default: 'info', choices: ['info', 'warn', 'error', 'silent'], help: 'structured log verbosity (stderr)' },
  // Fleet-wide spike and first-seen detection (GET /v1/anomalies), tuned like the sidecar's.
  ...ALERT_FLAGS,
];

export const COLLECTOR_HELP = formatHelp(
  'auditmesh collector [flags]',
  "Runs the control-plane collector: sidecars stream their journals to it over gRPC; it verifies\nevery batch (Merkle root, hash chain, signature, contiguous numbers), stores it in an embedded\nLMDB store, acks it, and answers queries and live tails over HTTP. Sidecars present a projected\nServiceAccount token (audience auditmesh; in a pod the issuer's keys are found by themselves) or a\n--token-file token; with neither it refuses to start unless --insecure is given.",
  COLLECTOR_FLAGS,
);

/** `auditmesh collector`: serves until aborted (SIGTERM/SIGINT), then closes and exits 0. */
export async function collectorMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(COLLECTOR_HELP);
    return 0;
  }
  let values;
  let serviceAccounts;
  let certTtlMs = 0;
  try {
    const parsed = parseFlags(COLLECTOR_FLAGS, argv, io.env);
    if (parsed.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    values = parsed.values;
    port(values, 'grpc-port');
    port(values, 'http-port');
    if ((values['max-tail-subscribers'] as number) < 1) throw new UsageError('--max-tail-subscribers: at least 1');
    serviceAccounts = serviceAccountKeys(values, io.env);
    certTtlMs = durationMs(values, 'cert-ttl');
    if (certTtlMs < 60_000) throw new UsageError('--cert-ttl: at least 1m');
    if (values['token-file'] === undefined && serviceAccounts === undefined && values.insecure !== true) {
      throw new UsageError('no --token-file and no --service-account-jwks (outside a Kubernetes pod): the collector would accept records from anyone; give one, or --insecure for a local, trusted setup');
    }
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh collector: ${err.message}\n(see auditmesh collector --help)\n`);
    return 2;
  }
  const log = createLogger(values['log-level'] as 'info', (line) => io.stderr.write(line));
  let collector: Collector;
  try {
    collector = await createCollector(
      {
        grpcPort: values['grpc-port'] as number,
        httpPort: values['http-port'] as number,
        bind: (values.bind as string | undefined) ?? (io.env.KUBERNETES_SERVICE_HOST !== undefined ? '0.0.0.0' : '127.0.0.1'),
        storeDir: values.store as string,
        tokenFile: values['token-file'] as string | undefined,
        serviceAccounts,
        // The mesh CA proves identities from ServiceAccount tokens: on whenever those are checked.
        identity:
          // In a pod the CA comes only from the install's Secret; until one is mounted the collector runs as before (token checks, plaintext).
          serviceAccounts === undefined || (io.env.KUBERNETES_SERVICE_HOST !== undefined && !existsSync(join(values['ca-dir'] as string, 'ca.crt')))
            ? undefined
            : { caDir: values['ca-dir'] as string, createCa: io.env.KUBERNETES_SERVICE_HOST === undefined, trustDomain: values['trust-domain'] as string, certTtlMs, serviceDns: serviceNames(podNamespace(io.env)) },
        insecure: values.insecure === true,
        heartbeatIntervalMs: values['heartbeat-interval-ms'] as number,
        alerts: alertOptionsFromFlags(values),
        maxTailSubscribers: values['max-tail-subscribers'] as number,
      },
      log,
    );
  } catch (err) {
    io.stderr.write(`auditmesh collector: cannot start: ${(err as Error).message}\n`);
    return err instanceof CollectorConfigError ? 2 : 1;
  }
  await untilAborted(io.signal);
  log('info', 'stopping');
  await collector.close();
  return 0;
}
