import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { choice, derived, duration, flag, flagsOf, optionalText, optionalWhole, readSettings, tcpPort, text, whole, type SettingsOf } from '../../command/settings.js';
import { createLogger } from '../../command/log.js';
import { CHECKPOINT_INTERVAL_MS } from '../../ledger/chain.js';
import { DEFAULT_TRUST_DOMAIN } from '../../ledger/spiffe-id.js';
import { ALERT_SETTINGS } from '../../anomalies/alert-flags.js';
import { createCollector, CollectorConfigError, type Collector, type IdentityConfig } from '../collector/collector.js';
import type { ServiceAccountKeys } from '../collector/ingest/service-account-tokens.js';
import { untilAborted, type CommandIO } from '../../command/io.js';
import { DEFAULT_MAX_TAIL_SUBSCRIBERS } from '../../command/tail-streams.js';
import { IN_CLUSTER_JWKS_URL } from '../collector/ingest/service-account-tokens.js';
import { kubeServicesOf, podNamespace, serviceAccountKeys } from './collector-identity.js';
import { serviceNames } from '../collector/ingest/serving-identity.js';
import { DEFAULT_RETENTION } from '../collector/store/store-retention.js';
import { otlpProtocolFrom } from '../collector/export/otlp-transport.js';

/** The shortest --cert-ttl: renewal at half-life is at most once a second. Short lifetimes are for tests. */
const MIN_CERT_TTL_MS = 2_000;
/** Below this a --cert-ttl is logged as a test setting: Certify calls grow as 2/TTL per sidecar. */
const SHORT_CERT_TTL_MS = 3_600_000;
import { parseJetStreamUrls, type JetStreamConfig } from '../collector/jetstream/nats-connect.js';

export const COLLECTOR_SETTINGS = {
  grpcPort: tcpPort({ name: 'grpc-port', default: 9400, help: 'gRPC ingest from sidecars (Sync)' }),
  httpPort: tcpPort({ name: 'http-port', default: 9401, help: 'query API, live tail, /metrics, /livez, /readyz' }),
  storeDir: text({ name: 'store', default: './.auditmesh/collector', help: 'embedded LMDB store folder' }),
  tokenFile: optionalText({ name: 'token-file', help: 'shared tokens accepted from sidecars, one a line (local runs); re-read when it changes' }),
  serviceAccountIssuer: optionalText({ name: 'service-account-issuer', help: "expected iss of the sidecars' ServiceAccount tokens (default in a pod: the issuer of the collector's own token)" }),
  serviceAccountJwks: optionalText({ name: 'service-account-jwks', help: `the issuer's public keys, FILE or URL (default in a pod: the API server's ${IN_CLUSTER_JWKS_URL})` }),
  trustDomain: text({ name: 'trust-domain', default: DEFAULT_TRUST_DOMAIN, help: 'the SPIFFE trust domain of issued identities' }),
  caDir: text({ name: 'ca-dir', default: './.auditmesh/ca', help: 'the mesh CA: ca.crt and ca.key (0600); in Kubernetes the Secret every replica mounts; created at first start only for local runs' }),
  certTtlMs: duration({ name: 'cert-ttl', default: '24h', help: 'lifetime of issued workload certificates and of the collector\'s own (renewed at half-life); 1h or more in production, down to 2s for tests' }),
  readerTokenFile: optionalText({ name: 'reader-token-file', help: 'reader tokens, one a line: TOKEN NAMESPACE[,NAMESPACE…] or TOKEN * (every namespace); re-read when it changes' }),
  readPolicy: optionalText({ name: 'read-policy', help: 'YAML: which ServiceAccount identities (tokens with audience auditmesh-read) may read which namespaces' }),
  insecure: flag({ name: 'insecure', default: false, help: 'accept sidecars without a token and serve reads to anyone, in plain HTTP (local, trusted setups only)' }),
  bind: derived({ name: 'bind', type: 'string', help: 'listen address (default 127.0.0.1; 0.0.0.0 in Kubernetes)' }, (values, env) => (values.bind as string | undefined) ?? (env.KUBERNETES_SERVICE_HOST !== undefined ? '0.0.0.0' : '127.0.0.1')),
  checkpointIntervalMs: whole({ name: 'checkpoint-interval-ms', default: CHECKPOINT_INTERVAL_MS, help: 'how often the collector signs a tree head of its witness log (what it stores, the heads it witnessed)' }, 100),
  heartbeatIntervalMs: whole({ name: 'heartbeat-interval-ms', default: CHECKPOINT_INTERVAL_MS, help: "the sidecars' heartbeat interval (their --checkpoint-interval-ms): 3 missed is stale" }),
  maxTailSubscribers: whole({ name: 'max-tail-subscribers', default: DEFAULT_MAX_TAIL_SUBSCRIBERS, help: '/v1/tail subscribers at once; past it 503' }, 1),
  exportOtlp: flag({ name: 'export-otlp', help: 'export stored records as OpenTelemetry logs over OTLP, at least once, from a cursor kept in the store; endpoint, protocol (grpc, http/protobuf, http/json), headers and timeout from the standard OTEL_EXPORTER_OTLP_LOGS_* / OTEL_EXPORTER_OTLP_* variables' }),
  retentionMs: duration({ name: 'retention', default: DEFAULT_RETENTION, help: 'prune whole batches sealed longer ago than this (90d, 12h; 0: never); with --export-otlp never one not exported yet' }),
  reconcileGraceMs: duration({ name: 'reconcile-grace', default: '2m', help: 'how long a call with one end seen stays pending before it counts as caller-only, callee-only or unpaired-external' }),
  directoryTrustClaimedIp: flag({ name: 'directory-trust-claimed-ip', default: false, help: "list a sidecar's claimed pod IP in the mesh directory even when its stream comes from another address (local runs behind NAT, loopback tests; never in a cluster)" }),
  storeLimitBytes: optionalWhole({ name: 'store-limit-bytes', help: "the store's bound: past it the oldest batches are pruned (never unexported ones); with nothing to prune, new segments are refused, retryable (sidecars buffer), and /readyz says so" }, 1_048_576, 'at least 1048576 (1 MiB)'),
  jetstream: optionalText({ name: 'jetstream', help: 'comma-separated NATS URLs (nats://HOST:PORT): run as one replica of a collector tier on NATS JetStream; --store then holds this replica\'s shard indexes' }, (value) => {
    try {
      parseJetStreamUrls(value);
    } catch (err) {
      throw new UsageError(`--jetstream: ${(err as Error).message}`);
    }
  }),
  jetstreamCreds: optionalText({ name: 'jetstream-creds', help: 'NATS credentials file (user JWT and nkey seed) for --jetstream' }),
  jetstreamCaFile: optionalText({ name: 'jetstream-ca-file', help: "CA bundle (PEM) the NATS servers' TLS certificates are checked against; TLS is then required" }),
  jetstreamLeaseMs: duration({ name: 'jetstream-lease', default: '15s', help: 'how long a replica owns a shard without renewing its lease: after it dies, another takes its shards over within this' }),
  logLevel: choice<'info' | 'warn' | 'error' | 'silent'>({ name: 'log-level', default: 'info', choices: ['info', 'warn', 'error', 'silent'], help: 'structured log verbosity (stderr)' }),
  // Fleet-wide spike and first-seen detection (GET /v1/anomalies), tuned like the sidecar's.
  alerts: ALERT_SETTINGS,
};

export const COLLECTOR_FLAGS: readonly FlagSpec[] = flagsOf(COLLECTOR_SETTINGS);

export const COLLECTOR_HELP = formatHelp(
  'auditmesh collector [flags]',
  "Runs the control-plane collector: sidecars stream their journals to it over gRPC; it verifies\nevery batch (Merkle root, hash chain, signature, contiguous numbers), stores it in an embedded\nLMDB store, acks it, and answers queries and live tails over HTTP to readers with a credential\n(--reader-token-file, --read-policy). Sidecars present a projected\nServiceAccount token (audience auditmesh; in a pod the issuer's keys are found by themselves) or a\n--token-file token; with neither it refuses to start unless --insecure is given. With\n--jetstream it runs as one replica of a collector tier on NATS JetStream: the stream is the\ndurable truth, chain heads live in a KV bucket, and --store holds the shards this replica indexes.",
  COLLECTOR_FLAGS,
);

/** `auditmesh collector`: serves until aborted (SIGTERM/SIGINT), then closes and exits 0. */
export async function collectorMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(COLLECTOR_HELP);
    return 0;
  }
  let settings: SettingsOf<typeof COLLECTOR_SETTINGS>;
  let serviceAccounts: ServiceAccountKeys | undefined;
  try {
    const parsed = parseFlags(COLLECTOR_FLAGS, argv, io.env);
    if (parsed.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    settings = readSettings(COLLECTOR_SETTINGS, parsed.values, io.env);
    serviceAccounts = serviceAccountKeys({ issuer: settings.serviceAccountIssuer, jwks: settings.serviceAccountJwks }, io.env);
    if (settings.certTtlMs < MIN_CERT_TTL_MS) throw new UsageError(`--cert-ttl: at least ${MIN_CERT_TTL_MS / 1000}s (renewal is at half-life, at most once a second)`);
    if (settings.tokenFile === undefined && serviceAccounts === undefined && !settings.insecure) {
      throw new UsageError('no --token-file and no --service-account-jwks (outside a Kubernetes pod): the collector would accept records from anyone; give one, or --insecure for a local, trusted setup');
    }
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh collector: ${err.message}\n(see auditmesh collector --help)\n`);
    return 2;
  }
  let protocol;
  try {
    protocol = settings.exportOtlp ? otlpProtocolFrom(io.env) : undefined;
  } catch (err) {
    io.stderr.write(`auditmesh collector: --export-otlp: ${(err as Error).message}\n`);
    return 2;
  }
  const { logLevel, serviceAccountIssuer: _issuer, serviceAccountJwks: _jwks, trustDomain: _domain, caDir: _caDir, certTtlMs: _ttl, exportOtlp: _export, jetstream: _js, jetstreamCreds: _creds, jetstreamCaFile: _jsCa, jetstreamLeaseMs: _lease, ...config } = settings;
  const log = createLogger(logLevel, (line) => io.stderr.write(line));
  if (settings.certTtlMs < SHORT_CERT_TTL_MS) log('warn', '--cert-ttl is for tests: every sidecar and the collector renew their certificate every half of it (use 1h or more)', { cert_ttl_ms: settings.certTtlMs });
  let collector: Collector;
  try {
    collector = await createCollector({ ...config, ...(protocol === undefined ? {} : { exportOtlp: { protocol } }), ...(serviceAccounts === undefined ? {} : { serviceAccounts }), identity: meshIdentity(settings, serviceAccounts, io.env), jetstream: jetStreamOf(settings), kubeServices: kubeServicesOf(io.env) }, log);
  } catch (err) {
    io.stderr.write(`auditmesh collector: cannot start: ${(err as Error).message}\n`);
    return err instanceof CollectorConfigError ? 2 : 1;
  }
  await untilAborted(io.signal);
  log('info', 'stopping');
  await collector.close();
  return 0;
}

/** --jetstream and its companions; undefined: the embedded store. */
function jetStreamOf(settings: SettingsOf<typeof COLLECTOR_SETTINGS>): JetStreamConfig | undefined {
  if (settings.jetstream === undefined) return undefined;
  return { urls: parseJetStreamUrls(settings.jetstream), credsFile: settings.jetstreamCreds, caFile: settings.jetstreamCaFile, leaseMs: settings.jetstreamLeaseMs };
}

/** The mesh CA proves identities from ServiceAccount tokens: on whenever those are checked. */
function meshIdentity(settings: SettingsOf<typeof COLLECTOR_SETTINGS>, serviceAccounts: ServiceAccountKeys | undefined, env: CommandIO['env']): IdentityConfig | undefined {
  // In a pod the CA comes only from the install's Secret; until one is mounted the collector runs as before (token checks, plaintext).
  if (serviceAccounts === undefined || (env.KUBERNETES_SERVICE_HOST !== undefined && !existsSync(join(settings.caDir, 'ca.crt')))) return undefined;
  return { caDir: settings.caDir, createCa: env.KUBERNETES_SERVICE_HOST === undefined, trustDomain: settings.trustDomain, certTtlMs: settings.certTtlMs, serviceDns: serviceNames(podNamespace(env)) };
}
