import { isAbsolute, relative, resolve } from 'node:path';
import { type FlagSpec, type FlagValues, UsageError, durationMs, parseFlags, port } from './config/flags.js';
import type { JournalFullPolicy } from './audit/full-policy.js';
import { MAX_BATCH_RECORDS } from './audit/batcher.js';
import { parseResolveTable, type ResolveTable } from './http1/target.js';
import type { AlertOptions } from './alerts/alerting.js';
import { ALERT_FLAGS, alertOptionsFromFlags } from './alerts/alert-flags.js';
import { DEFAULT_MAX_TAIL_SUBSCRIBERS } from './metrics/tail-streams.js';
import { DEFAULT_SECRET_HEADERS } from './audit/redact.js';
import { compileSecretParams, effectiveSecretParams } from './audit/secret-params.js';
import { parseSecretPaths } from './audit/secret-paths.js';

export type AuditMode = 'async' | 'strict' | 'off';
export type ForwardEngine = 'http-proxy' | 'undici';

export interface ShipSettings {
  windowSegments: number;
  windowBytes: number;
  welcomeTimeoutMs: number;
  ackTimeoutMs: number;
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
  backoffMaxMs: number;
}

/** The sidecar's whole configuration: typed, validated at boot, frozen. */
export interface SidecarConfig {
  service: string;
  appPort: number | undefined;
  appHost: string;
  inboundPort: number;
  outboundPort: number;
  adminPort: number;
  bind: string;
  journalDir: string;
  keyFile: string;
  redactionKeyFile: string;
  collector: string | undefined;
  collectorTokenFile: string | undefined;
  /** A projected ServiceAccount token (audience auditmesh), presented to the collector; re-read at each connect. */
  identityTokenFile: string | undefined;
  /** The mesh CA bundle: with --identity-token-file, ship over mTLS with a certificate from it. */
  caFile: string | undefined;
  /** Stable name of this sidecar at the collector: the pod name (default $HOSTNAME, else the service). */
  sidecarId: string;
  /** How the shipper talks to the collector (proxy/ship/). */
  ship: ShipSettings;
  auditMode: AuditMode;
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  idleTimeoutMs: number;
  upstreamKeepAliveMs: number;
  maxSocketsPerUpstream: number;
  /** Requests waiting for a pooled connection per upstream, at most: 503 (overload) beyond; 0: no bound. */
  maxPendingPerUpstream: number;
  /** The HTTP/1.1 forwarding engine (proxy/http1/forwarder.ts); WebSocket upgrades always go through http-proxy. */
  forwardEngine: ForwardEngine;
  /** Time a client has to send a request's line and headers (slowloris bound): 408 after it. */
  headersTimeoutMs: number;
  /** Largest HTTP/1.1 request line plus headers: 431 beyond. */
  maxHeaderBytes: number;
  /** Largest HTTP/1.1 request body: 413 beyond; 0: no limit. */
  maxRequestBodyBytes: number;
  /** Largest gRPC message a client may send: RESOURCE_EXHAUSTED beyond; 0: no limit. */
  maxGrpcMessageBytes: number;
  secretHeaders: readonly string[];
  /** Query parameter name patterns in effect: the built-in ones plus --secret-params, or those alone. */
  secretParams: readonly string[];
  /** Path templates whose `{secret}` segments are fingerprinted. */
  secretPaths: readonly string[];
  logLevel: 'info' | 'warn' | 'error' | 'silent';
  /** Static outbound name resolution for local runs (`--resolve inventory:80=127.0.0.1:8081`). */
  resolve: ResolveTable;
  /** Destination ports relayed as opaque TCP without protocol detection (server-first protocols). */
  opaquePorts: ReadonlySet<number>;
  detectTimeoutMs: number;
  /** Interim records for long-lived HTTP/2 streams at this interval; 0 turns them off. */
  interimRecordMs: number;
  /** Per-exchange request metrics (counts, durations, bytes, added latency); off only to measure their cost. */
  requestMetrics: boolean;
  /** Spike and first-seen detection; intervalMs 0 turns it off. */
  alerts: AlertOptions;
  checkpointIntervalMs: number;
  /** Records per audit batch (one chain link), at most. */
  batchMaxRecords: number;
  journalLimitBytes: number;
  onJournalFull: JournalFullPolicy;
  /** 0: never pruned by age. */
  journalRetentionMs: number;
  /** Admin /tail subscribers at once; past it 503. */
  maxTailSubscribers: number;
  /** Test-only fault injection, set by main.ts from AUDITMESH_TEST_SEAL_CRASH_FILE (pool.ts); never a flag. */
  testSealCrashFile?: string;
}

export const SIDECAR_FLAGS: readonly FlagSpec[] = [
  { name: 'service', type: 'string', help: 'service identity stamped on records (default: derived from $HOSTNAME)' },
  { name: 'app-port', type: 'int', help: "the app's port on 127.0.0.1; required for inbound" },
  { name: 'app-host', type: 'string', default: '127.0.0.1', help: 'where the app listens' },
  { name: 'inbound-port', type: 'int', default: '15006', help: 'inbound listener; forwards to the app' },
  { name: 'outbound-port', type: 'int', default: '15001', help: 'outbound listener: HTTP proxy (HTTP_PROXY) and redirected traffic' },
  { name: 'admin-port', type: 'int', default: '15020', help: '/metrics, /livez, /readyz, /tail' },
  { name: 'bind', type: 'string', default: '127.0.0.1', help: 'listen address of the inbound and admin listeners (0.0.0.0 in Kubernetes); the outbound listener always binds 127.0.0.1' },
  { name: 'journal', type: 'string', default: './.auditmesh/journal', help: 'LMDB journal folder' },
  { name: 'key', type: 'string', default: './.auditmesh/sidecar.key', help: "the sidecar's Ed25519 signing key; created 0600 if absent" },
  { name: 'redaction-key', type: 'string', default: './.auditmesh/redaction.key', help: 'HMAC key for secret fingerprints; share it to match secrets across sidecars' },
  { name: 'collector', type: 'string', help: 'HOST:PORT of the collector (none: journal only)' },
  { name: 'collector-token-file', type: 'string', help: 'shared credential presented to the collector, for local runs without Kubernetes (read at each connect, trimmed)' },
  { name: 'identity-token-file', type: 'string', help: 'a projected ServiceAccount token (audience auditmesh) presented to the collector; re-read at each connect, as the kubelet rotates it (the injector mounts one)' },
  { name: 'ca-file', type: 'string', help: 'the mesh CA bundle: trusts the collector; with --identity-token-file the sidecar obtains a certificate of its key and ships over mTLS (the injector mounts one)' },
  { name: 'sidecar-id', type: 'string', help: "this sidecar's stable name at the collector (default: $HOSTNAME, else the service)" },
  { name: 'ship-window-segments', type: 'int', default: '16', help: 'segments sent to the collector and not yet acknowledged, at most' },
  { name: 'ship-window-bytes', type: 'int', default: String(8 * 1024 * 1024), help: 'record bytes sent to the collector and not yet acknowledged, at most' },
  { name: 'ship-welcome-timeout-ms', type: 'int', default: '10000', help: 'connect and Welcome from the collector within this, or reconnect' },
  { name: 'ship-ack-timeout-ms', type: 'int', default: '30000', help: 'a sent segment unacknowledged this long: reconnect' },
  { name: 'ship-keepalive-ms', type: 'int', default: '30000', help: 'gRPC keepalive ping interval to the collector (keep at or above its minimum ping interval)' },
  { name: 'ship-keepalive-timeout-ms', type: 'int', default: '10000', help: 'a keepalive ping unanswered this long drops the connection' },
  { name: 'ship-backoff-max-ms', type: 'int', default: '30000', help: 'reconnect backoff cap (exponential, full jitter)' },
  { name: 'audit-mode', type: 'string', default: 'async', choices: ['async', 'strict', 'off'], help: 'strict: forward only once the request record is durable; off: proxy without auditing (for measurement)' },
  { name: 'connect-timeout-ms', type: 'int', default: '5000', help: 'upstream TCP connect timeout (504)' },
  { name: 'response-timeout-ms', type: 'int', default: '30000', help: 'time to upstream response headers (504)' },
  { name: 'idle-timeout-ms', type: 'int', default: '300000', help: 'a proxied connection idle for this long is closed' },
  { name: 'upstream-keepalive-ms', type: 'int', default: '4000', help: 'idle pooled upstream sockets close after this (keep below the app keep-alive timeout)' },
  { name: 'max-sockets-per-upstream', type: 'int', default: '256', help: 'connection pool size per upstream' },
  { name: 'max-pending-per-upstream', type: 'int', default: '1024', help: 'requests that may wait for a pooled connection per upstream; past it 503 at once (0: no bound)' },
  { name: 'forward-engine', type: 'string', default: 'undici', choices: ['undici', 'http-proxy'], help: 'HTTP/1.1 forwarding engine: undici, or http-proxy (about twice the CPU per request); WebSocket upgrades go through http-proxy with either' },
  { name: 'headers-timeout-ms', type: 'int', default: '20000', help: 'a client must send its request line and headers within this (slowloris bound; 408)' },
  { name: 'max-header-bytes', type: 'int', default: '16384', help: 'largest HTTP/1.1 request line plus headers (431 beyond)' },
  { name: 'max-request-body-bytes', type: 'int', default: '0', help: 'largest HTTP/1.1 request body (413 beyond); 0: no limit (bodies stream, memory stays bounded)' },
  { name: 'max-grpc-message-bytes', type: 'int', default: '0', help: 'largest gRPC message a client may send (RESOURCE_EXHAUSTED beyond); 0: no limit' },
  { name: 'secret-headers', type: 'list', default: DEFAULT_SECRET_HEADERS.join(','), help: 'headers recorded only as HMAC fingerprints' },
  { name: 'secret-params', type: 'list', help: 'query parameter name patterns whose values are recorded only as HMAC fingerprints, added to the built-in ones (README); a leading = replaces them' },
  { name: 'secret-paths', type: 'list', help: 'path templates whose {secret} segments are recorded only as HMAC fingerprints (/hooks/{secret},/users/*/reset/{secret})' },
  { name: 'resolve', type: 'list', help: 'static outbound resolution NAME:PORT=HOST:PORT, comma-separated (local runs without DNS)' },
  { name: 'opaque-ports', type: 'list', default: '25,587,3306,4444,5432,6379,9300,11211,27017', help: 'destination ports relayed as opaque TCP, skipping protocol detection (server-first protocols)' },
  { name: 'detect-timeout-ms', type: 'int', default: '1000', help: 'a client silent this long after connecting is relayed as opaque TCP' },
  { name: 'interim-record-ms', type: 'int', default: '60000', help: 'interim records for long-lived HTTP/2 and gRPC streams at this interval (0: off)' },
  { name: 'request-metrics', type: 'string', default: 'on', choices: ['on', 'off'], help: 'off: exchanges are not counted or timed in /metrics (process and journal metrics stay; for measuring their cost)' },
  ...ALERT_FLAGS,
  { name: 'log-level', type: 'string', default: 'info', choices: ['info', 'warn', 'error', 'silent'], help: 'structured log verbosity (stderr)' },
  { name: 'checkpoint-interval-ms', type: 'int', default: '5000', help: 'a signed checkpoint at least this often, even with no traffic' },
  { name: 'batch-max-records', type: 'int', default: String(MAX_BATCH_RECORDS), help: 'records per audit batch (one chain link), at most' },
  { name: 'journal-limit-bytes', type: 'int', default: String(1024 ** 3), help: 'journal bound (bytes of LMDB pages in use); at it, --on-journal-full applies' },
  { name: 'on-journal-full', type: 'string', default: 'reject', choices: ['reject', 'pass'], help: 'journal full or unwritable: reject new requests with 503, or pass them unrecorded, counted in signed gap records' },
  { name: 'max-tail-subscribers', type: 'int', default: String(DEFAULT_MAX_TAIL_SUBSCRIBERS), help: 'admin /tail subscribers at once; past it 503' },
  { name: 'journal-retention', type: 'string', default: '7d', help: 'records older than this are pruned (30m, 12h, 7d; 0: never)' },
];

function resolveTable(entries: string[]): ResolveTable {
  try {
    return parseResolveTable(entries);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function portNumber(text: string, flag: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535) throw new UsageError(`${flag}: ${JSON.stringify(text)} is not a TCP port`);
  return n;
}

/** The name patterns in effect, each checked at boot. */
function secretParams(list: string[]): string[] {
  const patterns = effectiveSecretParams(list);
  for (const p of patterns) {
    try {
      compileSecretParams([p]);
    } catch (err) {
      throw new UsageError(`--secret-params: ${(err as Error).message}`);
    }
  }
  return patterns;
}

function secretPaths(list: string[]): string[] {
  try {
    parseSecretPaths(list);
  } catch (err) {
    throw new UsageError(`--secret-paths: ${(err as Error).message}`);
  }
  return list;
}

/** Kubernetes pod names end in -<replicaset hash>-<5 chars>; the service is what comes before. */
export function serviceFromHostname(hostname: string | undefined): string {
  if (hostname === undefined || hostname === '') return 'unknown';
  return hostname.replace(/-[a-z0-9]{6,10}-[a-z0-9]{5}$/, '').replace(/-[a-z0-9]{5}$/, '') || hostname;
}

/** Each shipper setting and its flag. */
const SHIP_FLAGS: Record<keyof ShipSettings, string> = {
  windowSegments: 'ship-window-segments',
  windowBytes: 'ship-window-bytes',
  welcomeTimeoutMs: 'ship-welcome-timeout-ms',
  ackTimeoutMs: 'ship-ack-timeout-ms',
  keepaliveMs: 'ship-keepalive-ms',
  keepaliveTimeoutMs: 'ship-keepalive-timeout-ms',
  backoffMaxMs: 'ship-backoff-max-ms',
};

function shipSettings(values: FlagValues): ShipSettings {
  const settings = {} as ShipSettings;
  for (const [key, flag] of Object.entries(SHIP_FLAGS) as [keyof ShipSettings, string][]) {
    const value = values[flag] as number;
    if (value < 1) throw new UsageError(`--${flag}: at least 1`);
    settings[key] = value;
  }
  return settings;
}

export function sidecarConfigFromFlags(values: FlagValues, env: Readonly<Record<string, string | undefined>>): SidecarConfig {
  const cfg: SidecarConfig = {
    service: (values.service as string | undefined) ?? serviceFromHostname(env.HOSTNAME),
    appPort: values['app-port'] === undefined ? undefined : port(values, 'app-port'),
    appHost: values['app-host'] as string,
    inboundPort: port(values, 'inbound-port'),
    outboundPort: port(values, 'outbound-port'),
    adminPort: port(values, 'admin-port'),
    bind: values.bind as string,
    journalDir: values.journal as string,
    keyFile: values.key as string,
    redactionKeyFile: values['redaction-key'] as string,
    collector: values.collector as string | undefined,
    collectorTokenFile: values['collector-token-file'] as string | undefined,
    identityTokenFile: values['identity-token-file'] as string | undefined,
    caFile: values['ca-file'] as string | undefined,
    sidecarId: '',
    ship: shipSettings(values),
    auditMode: values['audit-mode'] as AuditMode,
    connectTimeoutMs: values['connect-timeout-ms'] as number,
    responseTimeoutMs: values['response-timeout-ms'] as number,
    idleTimeoutMs: values['idle-timeout-ms'] as number,
    upstreamKeepAliveMs: values['upstream-keepalive-ms'] as number,
    maxSocketsPerUpstream: values['max-sockets-per-upstream'] as number,
    maxPendingPerUpstream: values['max-pending-per-upstream'] as number,
    forwardEngine: values['forward-engine'] as ForwardEngine,
    headersTimeoutMs: values['headers-timeout-ms'] as number,
    maxHeaderBytes: values['max-header-bytes'] as number,
    maxRequestBodyBytes: values['max-request-body-bytes'] as number,
    maxGrpcMessageBytes: values['max-grpc-message-bytes'] as number,
    secretHeaders: values['secret-headers'] as string[],
    secretParams: secretParams((values['secret-params'] as string[] | undefined) ?? []),
    secretPaths: secretPaths((values['secret-paths'] as string[] | undefined) ?? []),
    logLevel: values['log-level'] as SidecarConfig['logLevel'],
    resolve: resolveTable((values.resolve as string[] | undefined) ?? []),
    opaquePorts: new Set((values['opaque-ports'] as string[]).map((p) => portNumber(p, '--opaque-ports'))),
    detectTimeoutMs: values['detect-timeout-ms'] as number,
    interimRecordMs: values['interim-record-ms'] as number,
    requestMetrics: values['request-metrics'] === 'on',
    alerts: alertOptionsFromFlags(values),
    checkpointIntervalMs: values['checkpoint-interval-ms'] as number,
    batchMaxRecords: values['batch-max-records'] as number,
    journalLimitBytes: values['journal-limit-bytes'] as number,
    onJournalFull: values['on-journal-full'] as JournalFullPolicy,
    journalRetentionMs: durationMs(values, 'journal-retention'),
    maxTailSubscribers: values['max-tail-subscribers'] as number,
  };
  cfg.sidecarId = (values['sidecar-id'] as string | undefined) || env.HOSTNAME || cfg.service;
  if (cfg.checkpointIntervalMs < 10) throw new UsageError('--checkpoint-interval-ms: at least 10');
  if (cfg.batchMaxRecords < 1) throw new UsageError('--batch-max-records: at least 1');
  if (cfg.maxSocketsPerUpstream < 1) throw new UsageError('--max-sockets-per-upstream: at least 1');
  if (cfg.maxPendingPerUpstream < 0) throw new UsageError('--max-pending-per-upstream: 0 (no bound) or more');
  if (cfg.headersTimeoutMs < 1) throw new UsageError('--headers-timeout-ms: at least 1');
  if (cfg.maxHeaderBytes < 1024) throw new UsageError('--max-header-bytes: at least 1024');
  if (cfg.maxTailSubscribers < 1) throw new UsageError('--max-tail-subscribers: at least 1');
  if (cfg.journalLimitBytes < 1) throw new UsageError('--journal-limit-bytes: at least 1');
  // Whoever can read the journal (a backup, a support bundle) must not get the key with it.
  const fromJournal = relative(resolve(cfg.journalDir), resolve(cfg.keyFile));
  if (fromJournal === '' || (!fromJournal.startsWith('..') && !isAbsolute(fromJournal))) throw new UsageError(`--key: ${cfg.keyFile} is inside the journal folder ${cfg.journalDir}; keep the key apart from it`);
  if (cfg.caFile !== undefined && cfg.identityTokenFile === undefined) throw new UsageError('--ca-file needs --identity-token-file: the mesh CA certifies a workload only on its ServiceAccount token');
  if (cfg.identityTokenFile !== undefined && cfg.collectorTokenFile !== undefined) throw new UsageError('--identity-token-file and --collector-token-file: give one credential for the collector, not both');
  if (cfg.collector !== undefined && !/^[^:\s]+:\d+$/.test(cfg.collector)) {
    throw new UsageError(`--collector: expected HOST:PORT, got ${JSON.stringify(cfg.collector)}`);
  }
  return Object.freeze(cfg);
}

/** Flags + environment → the sidecar's config; throws UsageError naming the flag at fault. */
export function parseSidecarConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): SidecarConfig {
  const { values, positionals } = parseFlags(SIDECAR_FLAGS, argv, env);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  return sidecarConfigFromFlags(values, env);
}

/** Defaults for an embedded sidecar (demo, tests): every port 0 unless given. */
export function sidecarConfig(overrides: Partial<SidecarConfig>): SidecarConfig {
  const { values } = parseFlags(SIDECAR_FLAGS, [], {});
  const base = sidecarConfigFromFlags(values, {});
  return Object.freeze({ ...base, inboundPort: 0, outboundPort: 0, adminPort: 0, logLevel: 'silent' as const, sidecarId: overrides.service ?? base.sidecarId, ...overrides });
}
