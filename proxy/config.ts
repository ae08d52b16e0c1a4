import { isIP } from 'node:net';
import { isAbsolute, relative, resolve } from 'node:path';
import { type FlagSpec, UsageError, parseFlags } from '../command/flags.js';
import { choice, defaultsOf, derived, duration, flagsOf, list, optionalPort, optionalText, parsedList, readSettings, tcpPort, text, whole, type SettingsOf } from '../command/settings.js';
import { ALERT_SETTINGS } from '../anomalies/alert-flags.js';
import { parseResolveTable, type ResolveTable } from './routing/target.js';
import { DEFAULT_MAX_TAIL_SUBSCRIBERS } from '../command/tail-streams.js';
import { compileSecretParams, effectiveSecretParams } from './audit/secret-params.js';
import { parseSecretPaths } from './audit/secret-paths.js';
import type { InboundPolicy } from './mesh/mesh-peers.js';
import type { MeshDirectory } from './mesh/directory.js';
import type { WorkloadCertificateSource } from './mesh/mesh-credentials.js';

/**
 * The sidecar's settings, declared once: the table below gives the config type, the flags (each
 * also an env variable, AUDITMESH_<FLAG>), `--help` and the defaults.
 */

export type AuditMode = 'async' | 'strict' | 'off';
export type ForwardEngine = 'http-proxy' | 'undici';

/** Records per audit batch (one chain link), at most, unless configured. */
export const MAX_BATCH_RECORDS = 256;
/** Headers recorded only as HMAC fingerprints, unless configured. */
export const DEFAULT_SECRET_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key', 'x-auth-token'];

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

const SERVICE_FLAG: FlagSpec = { name: 'service', type: 'string', help: 'service identity stamped on records (default: derived from $HOSTNAME)' };
const serviceOf = (values: Record<string, unknown>, env: Readonly<Record<string, string | undefined>>): string => (values.service as string | undefined) ?? serviceFromHostname(env.HOSTNAME);

export const SIDECAR_SETTINGS = {
  service: derived(SERVICE_FLAG, serviceOf),
  appPort: optionalPort({ name: 'app-port', help: "the app's port on 127.0.0.1; required for inbound" }),
  appHost: text({ name: 'app-host', default: '127.0.0.1', help: 'where the app listens' }),
  inboundPort: tcpPort({ name: 'inbound-port', default: 15006, help: 'inbound listener; forwards to the app' }),
  outboundPort: tcpPort({ name: 'outbound-port', default: 15001, help: 'outbound listener: HTTP proxy (HTTP_PROXY) and redirected traffic' }),
  adminPort: tcpPort({ name: 'admin-port', default: 15020, help: '/metrics, /livez, /readyz, /tail' }),
  bind: text({ name: 'bind', default: '127.0.0.1', help: 'listen address of the inbound and admin listeners (0.0.0.0 in Kubernetes); the outbound listener always binds 127.0.0.1' }),
  journalDir: text({ name: 'journal', default: './.auditmesh/journal', help: 'LMDB journal folder' }),
  keyFile: text({ name: 'key', default: './.auditmesh/sidecar.key', help: "the sidecar's Ed25519 signing key; created 0600 if absent" }),
  redactionKeyFile: text({ name: 'redaction-key', default: './.auditmesh/redaction.key', help: 'HMAC key for secret fingerprints; share it to match secrets across sidecars' }),
  collector: optionalText({ name: 'collector', help: 'HOST:PORT of the collector (none: journal only)' }, (value) => {
    if (!/^[^:\s]+:\d+$/.test(value)) throw new UsageError(`--collector: expected HOST:PORT, got ${JSON.stringify(value)}`);
  }),
  collectorTokenFile: optionalText({ name: 'collector-token-file', help: 'shared credential presented to the collector, for local runs without Kubernetes (read at each connect, trimmed)' }),
  /** A projected ServiceAccount token (audience auditmesh), presented to the collector; re-read at each connect. */
  identityTokenFile: optionalText({ name: 'identity-token-file', help: 'a projected ServiceAccount token (audience auditmesh) presented to the collector; re-read at each connect, as the kubelet rotates it (the injector mounts one)' }),
  /** The mesh CA bundle: with --identity-token-file, ship over mTLS with a certificate from it. */
  caFile: optionalText({ name: 'ca-file', help: 'the mesh CA bundle: trusts the collector; with --identity-token-file the sidecar obtains a certificate of its key and ships over mTLS (the injector mounts one)' }),
  /** The pod's IP (the injector sets AUDITMESH_POD_IP from status.podIP): claimed in the Hello for the mesh directory. */
  podIp: optionalText({ name: 'pod-ip', help: "this pod's IP address, claimed to the collector for the mesh directory (listed only when it is the address the sidecar's stream comes from; the injector sets it from status.podIP)" }, (value) => {
    if (isIP(value) === 0) throw new UsageError(`--pod-ip: ${JSON.stringify(value)} is not an IP address`);
  }),
  /** Stable name of this sidecar at the collector: the pod name (default $HOSTNAME, else the service). */
  sidecarId: derived({ name: 'sidecar-id', type: 'string', help: "this sidecar's stable name at the collector (default: $HOSTNAME, else the service)" }, (values, env) => (values['sidecar-id'] as string | undefined) || env.HOSTNAME || serviceOf(values, env)),
  /** How the shipper talks to the collector (proxy/ship/). */
  ship: {
    windowSegments: whole({ name: 'ship-window-segments', default: 16, help: 'segments sent to the collector and not yet acknowledged, at most' }, 1),
    windowBytes: whole({ name: 'ship-window-bytes', default: 8 * 1024 * 1024, help: 'record bytes sent to the collector and not yet acknowledged, at most' }, 1),
    welcomeTimeoutMs: whole({ name: 'ship-welcome-timeout-ms', default: 10_000, help: 'connect and Welcome from the collector within this, or reconnect' }, 1),
    ackTimeoutMs: whole({ name: 'ship-ack-timeout-ms', default: 30_000, help: 'a sent segment unacknowledged this long: reconnect' }, 1),
    keepaliveMs: whole({ name: 'ship-keepalive-ms', default: 30_000, help: 'gRPC keepalive ping interval to the collector (keep at or above its minimum ping interval)' }, 1),
    keepaliveTimeoutMs: whole({ name: 'ship-keepalive-timeout-ms', default: 10_000, help: 'a keepalive ping unanswered this long drops the connection' }, 1),
    backoffMaxMs: whole({ name: 'ship-backoff-max-ms', default: 30_000, help: 'reconnect backoff cap (exponential, full jitter)' }, 1),
  },
  /** Which plaintext callers the inbound listener refuses (sidecar-to-sidecar mTLS, proxy/mesh/). */
  inboundPolicy: choice<InboundPolicy>({ name: 'inbound-policy', default: 'permissive', choices: ['permissive', 'verified', 'mesh-verified'], help: 'inbound callers not proven over mesh mTLS: permissive admits them; verified refuses every one (403, gRPC PERMISSION_DENIED, TCP closed); mesh-verified refuses those from addresses the mesh directory lists as meshed' }),
  auditMode: choice<AuditMode>({ name: 'audit-mode', default: 'async', choices: ['async', 'strict', 'off'], help: 'strict: forward only once the request record is durable; off: proxy without auditing (for measurement)' }),
  connectTimeoutMs: whole({ name: 'connect-timeout-ms', default: 5000, help: 'upstream TCP connect timeout (504)' }),
  responseTimeoutMs: whole({ name: 'response-timeout-ms', default: 30_000, help: 'time to upstream response headers (504)' }),
  idleTimeoutMs: whole({ name: 'idle-timeout-ms', default: 300_000, help: 'a proxied connection idle for this long is closed' }),
  upstreamKeepAliveMs: whole({ name: 'upstream-keepalive-ms', default: 4000, help: 'idle pooled upstream sockets close after this (keep below the app keep-alive timeout)' }),
  maxSocketsPerUpstream: whole({ name: 'max-sockets-per-upstream', default: 256, help: 'connection pool size per upstream' }, 1),
  /** Requests waiting for a pooled connection per upstream, at most: 503 (overload) beyond; 0: no bound. */
  maxPendingPerUpstream: whole({ name: 'max-pending-per-upstream', default: 1024, help: 'requests that may wait for a pooled connection per upstream; past it 503 at once (0: no bound)' }, 0, '0 (no bound) or more'),
  /** The HTTP/1.1 forwarding engine (proxy/http1/forwarder.ts); WebSocket upgrades always go through http-proxy. */
  forwardEngine: choice<ForwardEngine>({ name: 'forward-engine', default: 'undici', choices: ['undici', 'http-proxy'], help: 'HTTP/1.1 forwarding engine: undici, or http-proxy (about twice the CPU per request); WebSocket upgrades go through http-proxy with either' }),
  /** Time a client has to send a request's line and headers (slowloris bound): 408 after it. */
  headersTimeoutMs: whole({ name: 'headers-timeout-ms', default: 20_000, help: 'a client must send its request line and headers within this (slowloris bound; 408)' }, 1),
  /** Largest HTTP/1.1 request line plus headers: 431 beyond. */
  maxHeaderBytes: whole({ name: 'max-header-bytes', default: 16_384, help: 'largest HTTP/1.1 request line plus headers (431 beyond)' }, 1024),
  /** Largest HTTP/1.1 request body: 413 beyond; 0: no limit. */
  maxRequestBodyBytes: whole({ name: 'max-request-body-bytes', default: 0, help: 'largest HTTP/1.1 request body (413 beyond); 0: no limit (bodies stream, memory stays bounded)' }),
  /** Largest gRPC message a client may send: RESOURCE_EXHAUSTED beyond; 0: no limit. */
  maxGrpcMessageBytes: whole({ name: 'max-grpc-message-bytes', default: 0, help: 'largest gRPC message a client may send (RESOURCE_EXHAUSTED beyond); 0: no limit' }),
  secretHeaders: list({ name: 'secret-headers', default: DEFAULT_SECRET_HEADERS, help: 'headers recorded only as HMAC fingerprints' }),
  /** Query parameter name patterns in effect: the built-in ones plus --secret-params, or those alone. */
  secretParams: parsedList({ name: 'secret-params', help: 'query parameter name patterns whose values are recorded only as HMAC fingerprints, added to the built-in ones (README); a leading = replaces them' }, secretParams),
  /** Path templates whose `{secret}` segments are fingerprinted. */
  secretPaths: parsedList({ name: 'secret-paths', help: 'path templates whose {secret} segments are recorded only as HMAC fingerprints (/hooks/{secret},/users/*/reset/{secret})' }, secretPaths),
  /** Static outbound name resolution for local runs (`--resolve inventory:80=127.0.0.1:8081`). */
  resolve: parsedList({ name: 'resolve', help: 'static outbound resolution NAME:PORT=HOST:PORT, comma-separated (local runs without DNS)' }, resolveTable),
  /** Destination ports relayed as opaque TCP without protocol detection (server-first protocols). */
  opaquePorts: parsedList({ name: 'opaque-ports', default: ['25', '587', '3306', '4444', '5432', '6379', '9300', '11211', '27017'], help: 'destination ports relayed as opaque TCP, skipping protocol detection (server-first protocols)' }, (ports): ReadonlySet<number> => new Set(ports.map((p) => portNumber(p, '--opaque-ports')))),
  detectTimeoutMs: whole({ name: 'detect-timeout-ms', default: 1000, help: 'a client silent this long after connecting is relayed as opaque TCP' }),
  /** Interim records for long-lived HTTP/2 streams at this interval; 0 turns them off. */
  interimRecordMs: whole({ name: 'interim-record-ms', default: 60_000, help: 'interim records for long-lived HTTP/2 and gRPC streams at this interval (0: off)' }),
  /** Per-exchange request metrics (counts, durations, bytes, added latency); off only to measure their cost. */
  requestMetrics: derived({ name: 'request-metrics', type: 'string', default: 'on', choices: ['on', 'off'], help: 'off: exchanges are not counted or timed in /metrics (process and journal metrics stay; for measuring their cost)' }, (values) => values['request-metrics'] === 'on'),
  /** Spike and first-seen detection; intervalMs 0 turns it off. */
  alerts: ALERT_SETTINGS,
  logLevel: choice<'info' | 'warn' | 'error' | 'silent'>({ name: 'log-level', default: 'info', choices: ['info', 'warn', 'error', 'silent'], help: 'structured log verbosity (stderr)' }),
  checkpointIntervalMs: whole({ name: 'checkpoint-interval-ms', default: 5000, help: 'a signed checkpoint at least this often, even with no traffic' }, 10),
  /** Records per audit batch (one chain link), at most. */
  batchMaxRecords: whole({ name: 'batch-max-records', default: MAX_BATCH_RECORDS, help: 'records per audit batch (one chain link), at most' }, 1),
  journalLimitBytes: whole({ name: 'journal-limit-bytes', default: 1024 ** 3, help: 'journal bound (bytes of LMDB pages in use); at it, --on-journal-full applies' }, 1),
  onJournalFull: choice<'reject' | 'pass'>({ name: 'on-journal-full', default: 'reject', choices: ['reject', 'pass'], help: 'journal full or unwritable: reject new requests with 503, or pass them unrecorded, counted in signed gap records' }),
  /** Admin /tail subscribers at once; past it 503. */
  maxTailSubscribers: whole({ name: 'max-tail-subscribers', default: DEFAULT_MAX_TAIL_SUBSCRIBERS, help: 'admin /tail subscribers at once; past it 503' }, 1),
  /** 0: never pruned by age. */
  journalRetentionMs: duration({ name: 'journal-retention', default: '7d', help: 'records older than this are pruned (30m, 12h, 7d; 0: never)' }),
};

/** The sidecar's whole configuration: typed, validated at boot, frozen. */
export type SidecarConfig = SettingsOf<typeof SIDECAR_SETTINGS> & {
  /** Test-only fault injection, set by main.ts from AUDITMESH_TEST_SEAL_CRASH_FILE (pool.ts); never a flag. */
  testSealCrashFile?: string;
  /**
   * Which pod addresses are meshed and who they are (proxy/mesh/directory.ts): the collector's
   * live directory when one is plugged in, a static one in tests; EMPTY_DIRECTORY when absent.
   */
  directory?: MeshDirectory;
  /**
   * A workload certificate of the journal key given by the embedder (tests, local runs) instead of
   * one obtained from the mesh CA with --identity-token-file; never a flag.
   */
  workloadCertificate?: WorkloadCertificateSource;
};
/** How the shipper talks to the collector. */
export type ShipSettings = SidecarConfig['ship'];

export const SIDECAR_FLAGS: readonly FlagSpec[] = flagsOf(SIDECAR_SETTINGS);

/** Flags + environment → the sidecar's config; throws UsageError naming the flag at fault. */
export function parseSidecarConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): SidecarConfig {
  const { values, positionals } = parseFlags(SIDECAR_FLAGS, argv, env);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const cfg = readSettings(SIDECAR_SETTINGS, values, env);
  // Whoever can read the journal (a backup, a support bundle) must not get the key with it.
  const fromJournal = relative(resolve(cfg.journalDir), resolve(cfg.keyFile));
  if (fromJournal === '' || (!fromJournal.startsWith('..') && !isAbsolute(fromJournal))) throw new UsageError(`--key: ${cfg.keyFile} is inside the journal folder ${cfg.journalDir}; keep the key apart from it`);
  if (cfg.caFile !== undefined && cfg.identityTokenFile === undefined) throw new UsageError('--ca-file needs --identity-token-file: the mesh CA certifies a workload only on its ServiceAccount token');
  if (cfg.identityTokenFile !== undefined && cfg.collectorTokenFile !== undefined) throw new UsageError('--identity-token-file and --collector-token-file: give one credential for the collector, not both');
  return Object.freeze(cfg);
}

/** Defaults for an embedded sidecar (demo, tests): every port 0 unless given. */
export function sidecarConfig(overrides: Partial<SidecarConfig>): SidecarConfig {
  const base = defaultsOf(SIDECAR_SETTINGS);
  return Object.freeze({ ...base, inboundPort: 0, outboundPort: 0, adminPort: 0, logLevel: 'silent' as const, sidecarId: overrides.service ?? base.sidecarId, ...overrides });
}
