import type http from 'node:http';
import type { Server as TlsServer } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { createLiveFeed } from '../../command/live-feed.js';
import { CHECKPOINT_INTERVAL_MS } from '../../ledger/chain.js';
import type { Logger } from '../../command/log.js';
import { COLLECTOR_SERVICE, DIRECTORY_SERVICE, IDENTITY_SERVICE } from '../../wire/sync-wire.js';
import { createMeshDirectory, type DirectoryView, type MeshDirectoryBook } from './directory/mesh-directory.js';
import { createWatchServer } from './directory/watch-server.js';
import { withClusterIps, type DirectoryWithServices } from './directory/cluster-ips.js';
import { DEFAULT_KUBE_SERVICES_INTERVAL_MS, watchKubeServices, type KubeServices } from './directory/kube-services.js';
import { createCertifyHandler } from './ingest/certify.js';
import { openMeshCa, type MeshCa } from './ingest/mesh-ca.js';
import { createServingIdentity, type ServingIdentity } from './ingest/serving-identity.js';
import { peerIdentity } from './ingest/peer-identity.js';
import { X509Certificate } from 'node:crypto';
import { DEFAULT_TRUST_DOMAIN } from '../../ledger/spiffe-id.js';
import { createCollectorMetrics, type CollectorMetrics } from './collector-metrics.js';
import type { CollectorStore } from './collector-store.js';
import { createHashPool } from './ingest/hash-pool.js';
import { createHttpApi } from './api/http-api.js';
import { createFleetAlerts, type FleetAlerts, type FleetAnomaly } from './api/fleet-alerts.js';
import type { AlertOptions } from '../../anomalies/exchange-summary.js';
import { defaultAlertOptions } from '../../anomalies/alert-flags.js';
import { Ingest } from './ingest/ingest.js';
import { openLmdbStore } from './store/lmdb-store.js';
import { logIfUnpatched } from '../../ledger/lmdb-build.js';
import type { StoredRun } from './ingest/sidecar-chain.js';
import { heartbeatTally, sidecarStatuses, type SidecarStatus } from './api/sidecar-status.js';
import { createSyncHandler } from './ingest/sync-server.js';
import { FLOW_WINDOW_OPTION, widenFlowWindow } from './ingest/flow-window.js';
import { createTokenCheck } from './ingest/token-auth.js';
import { createServiceAccountCheck, type ServiceAccountKeys } from './ingest/service-account-tokens.js';
import { createStreamAuth } from './ingest/stream-auth.js';
import { readAccessFrom, type ReadSettings } from './api/read-access.js';
import type { ServingTls } from '../../command/plain-http.js';
import { createCollectorKey } from './collector-key.js';
import { createCollectorWitness, type CollectorWitness } from './witness/collector-witness.js';
import type { ForkAfterWitness } from './witness/witness-dbs.js';
import { createStoreRetention, type StoreRetention } from './store/store-retention.js';
import type { PruneEntry } from './store/prune-log.js';
import { watchStoreWrites } from './store/store-writes.js';
import { DEFAULT_DISK_RESERVE_BYTES } from './store/disk-room.js';
import { createOtlpExport, type OtlpExport } from './export/otlp-export.js';
import type { OtlpTransportConfig } from './export/otlp-transport.js';
import type { JetStreamConfig } from './jetstream/nats-connect.js';
import { openTier, type Tier } from './jetstream/tier.js';
import { createCallReconciler, DEFAULT_RECONCILE_GRACE_MS, type CallReconciler } from './reconcile/call-reconciler.js';

/**
 * The collector, wired: store -> ingest -> gRPC Sync server, and the HTTP API beside it.
 * `auditmesh collector` (control/cli/collector.ts) and the tests' startTestCollector both start it
 * through createCollector.
 */

export interface CollectorConfig extends ReadSettings {
  /** 0 picks a free port. */
  grpcPort: number;
  httpPort: number;
  bind: string;
  storeDir: string;
  /** Accepted bearer tokens, one a line; this, `serviceAccounts` or `insecure` is required. */
  tokenFile?: string;
  /** Projected ServiceAccount tokens (audience auditmesh) accepted, checked against the issuer's keys. */
  serviceAccounts?: ServiceAccountKeys;
  insecure: boolean;
  /** The mesh CA (--ca-dir, --trust-domain, --cert-ttl); absent: no Certify. */
  identity?: IdentityConfig;
  /** How often the collector signs a tree head of its witness log (--checkpoint-interval-ms); default CHECKPOINT_INTERVAL_MS. */
  checkpointIntervalMs?: number;
  /** The sidecars' heartbeat (checkpoint) interval: heartbeats older than 3 of these are stale. */
  heartbeatIntervalMs?: number;
  /** Workers that hash and index records; default defaultHashThreads(). */
  hashThreads?: number;
  /** Largest Sync message accepted (a Segment), bytes. */
  maxMessageBytes?: number;
  /** Fleet-wide spike and first-seen detection over stored records (default: the sidecar's defaults); intervalMs 0 turns it off. */
  alerts?: AlertOptions;
  /** The most records one correlation id or trace id query gathers (default MAX_ID_MATCHES); past it the query is refused with 400. */
  maxIdMatches?: number;
  /** /v1/tail subscribers at once; past it 503 (default DEFAULT_MAX_TAIL_SUBSCRIBERS). */
  maxTailSubscribers?: number;
  /** The HTTP API serves HTTPS with this key and certificate; default: with a serving identity, its key and CA-issued certificate (renewed with it), else plain HTTP. */
  httpTls?: ServingTls;
  /** Batches sealed longer ago than this are pruned (--retention); 0: never by age. Default DEFAULT_RETENTION_MS. */
  retentionMs?: number;
  /** The store's bound (--store-limit-bytes): past it the oldest prunable batches go, and with none, new segments are refused. */
  storeLimitBytes?: number;
  /** Room kept free on the store's disk: under it, new segments are refused (default DEFAULT_DISK_RESERVE_BYTES; 0: no check). */
  diskReserveBytes?: number;
  /** How often retention sweeps (default SWEEP_INTERVAL_MS). */
  retentionSweepIntervalMs?: number;
  /** Told of every pruning once committed (the witness log signs them). */
  onPruned?: (entry: PruneEntry) => void;
  /** --export-otlp: export stored records as OpenTelemetry logs over OTLP. */
  exportOtlp?: OtlpTransportConfig & { pollMs?: number; retryMaxMs?: number };
  /** Run as one replica of a collector tier on NATS JetStream (jetstream/tier.ts); `storeDir` then holds this replica's shard indexes. */
  jetstream?: JetStreamConfig;
  /** How long a one-sided call stays pending before it counts (--reconcile-grace); default DEFAULT_RECONCILE_GRACE_MS. */
  reconcileGraceMs?: number;
  /** false: stored runs are not reconciled (the ingest benchmark's baseline; ingest's workers still read each call's end). */
  reconcile?: boolean;
  /** --directory-trust-claimed-ip: list a sidecar's claimed pod IP even when its stream comes from another address (local runs behind NAT, loopback tests). */
  directoryTrustClaimedIp?: boolean;
  /** How long a directory entry outlives its sidecar's stream; default 2 heartbeat intervals. */
  directoryGraceMs?: number;
  /** Directory.Watch's "still current" interval; default DIRECTORY_KEEPALIVE_MS (tests shorten it). */
  directoryKeepaliveMs?: number;
  /** In a pod: where to list the cluster's Services, so the directory lists ClusterIPs whose pods are all meshed (directory/kube-services.ts). */
  kubeServices?: { apiUrl: string; caFile?: string; bearerTokenFile?: string; intervalMs?: number };
}

/** --retention's default, 90 days. */
export const DEFAULT_RETENTION_MS = 90 * 86_400_000;

export interface IdentityConfig {
  caDir: string;
  /** Make a CA in caDir when it holds none: local runs only (in Kubernetes every replica mounts the Secret's). */
  createCa: boolean;
  /** Default DEFAULT_TRUST_DOMAIN. */
  trustDomain?: string;
  /** Lifetime of issued workload certificates; default DEFAULT_CERT_TTL_MS. */
  certTtlMs?: number;
  /** DNS names sidecars reach this collector by (its Service's), besides localhost and the bind address. */
  serviceDns?: readonly string[];
}

export const DEFAULT_CERT_TTL_MS = 24 * 3_600_000;

export interface Collector {
  readonly grpcPort: number;
  readonly httpPort: number;
  /** host:port for sidecars (--collector of the sidecar). */
  readonly grpcAddress: string;
  /** http://host:port of the HTTP API (https:// with httpTls or a serving identity). */
  readonly httpUrl: string;
  readonly metrics: CollectorMetrics;
  readonly store: CollectorStore;
  /** This replica's part of the JetStream tier; null for the embedded store. */
  readonly tier: Tier | null;
  /** The mesh CA; null without `identity`. */
  readonly ca: MeshCa | null;
  /** The collector's own key and CA certificate, gRPC serves TLS with it; null without `identity` or under --insecure. */
  readonly serving: ServingIdentity | null;
  /** The witness log of what it stores, its signed tree heads, and proofs (witness/). */
  readonly witness: CollectorWitness;
  /** Called with every run of verified records once it is durably stored; returns unsubscribe. For fleet-wide detection. */
  onStored(listener: (run: StoredRun) => void): () => void;
  /** Fleet-wide anomalies; null when --alert-interval-ms is 0. */
  readonly fleetAlerts: FleetAlerts | null;
  /** The store's bounds: retention and the byte limit. */
  readonly retention: StoreRetention;
  /** The OTLP export; null without exportOtlp. */
  readonly otlpExport: OtlpExport | null;
  /** Both ends of every call, reconciled (reconcile/). */
  readonly reconciler: CallReconciler;
  /** The mesh directory this collector keeps: pod IP -> proven workload identity of the sidecars streaming to it (directory/). */
  readonly directory: MeshDirectoryBook;
  /** What Directory.Watch serves: `directory`, or in the JetStream tier every replica's merged. */
  readonly fleetDirectory: DirectoryView;
  /** Listeners attached now: open /v1/tail streams plus onStored listeners. */
  readonly liveListeners: number;
  sidecars(): SidecarStatus[];
  close(): Promise<void>;
}

export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** The collector pings idle sidecar connections this often, and drops them if a ping goes unanswered. */
const KEEPALIVE_TIME_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 10_000;
/** On close, open Sync streams get this long to end before they are cut. */
const SHUTDOWN_GRACE_MS = 1_000;

/** Thrown at boot for a configuration that must not start (no credential and no --insecure). */
export class CollectorConfigError extends Error {}

export async function createCollector(config: CollectorConfig, log: Logger = () => {}): Promise<Collector> {
  if (config.tokenFile === undefined && config.serviceAccounts === undefined && !config.insecure) {
    throw new CollectorConfigError('no --token-file and no --service-account-jwks: the collector would accept records from anyone. Give one (in Kubernetes the service-account settings are found by themselves), or --insecure for a local, trusted setup');
  }
  const tokens = config.tokenFile === undefined ? null : createTokenCheck(config.tokenFile, (l) => log('info', String(l.msg), l));
  const serviceAccounts = config.serviceAccounts === undefined ? null : createServiceAccountCheck(config.serviceAccounts);
  const auth = config.insecure && tokens === null && serviceAccounts === null ? null : createStreamAuth(tokens, serviceAccounts);
  // Reads are open only under --insecure; otherwise /v1/ answers only readers with a credential.
  let readAccess;
  try {
    readAccess = config.insecure ? null : readAccessFrom(config, (level, msg, fields) => log(level, `read access: ${msg}`, fields));
  } catch (err) {
    throw new CollectorConfigError((err as Error).message);
  }
  const heartbeatIntervalMs = config.heartbeatIntervalMs ?? CHECKPOINT_INTERVAL_MS;
  const ca = config.identity === undefined ? null : await openMeshCa(config.identity.caDir, { create: config.identity.createCa });
  const trustDomain = config.identity?.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const certTtlMs = config.identity?.certTtlMs ?? DEFAULT_CERT_TTL_MS;
  const serving = ca === null || config.insecure ? null : await createServingIdentity(ca, { bind: config.bind, dns: config.identity?.serviceDns ?? [] }, certTtlMs, log);
  const caCert = ca === null ? null : new X509Certificate(ca.certPem);
  const peer = serving === null || caCert === null ? null : (call: { getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } }) => peerIdentity(call, caCert, trustDomain);
  const lmdbStore = openLmdbStore(config.storeDir, {
    maxIdMatches: config.maxIdMatches,
    onIndexError: (err) => log('error', 'collector id index merge failed: its segments stay as they are and queries still find every record; the next merge tries again', { store: config.storeDir, err: err.message }),
  });
  logIfUnpatched(log);
  // The metrics sample ingest's chains and the witness log, made below; nothing reads them before.
  const metrics = createCollectorMetrics({ storeBytes: () => lmdbStore.usedBytes(), sidecars: () => heartbeatTally(ingest.chains.values(), heartbeatIntervalMs, Date.now()), witnessTreeSize: () => witness.log.size });
  const writes = watchStoreWrites(lmdbStore, metrics.registry, log);
  const localStore = writes.store;
  let otlpExport: OtlpExport | null = null;
  // Prunings before the witness exists (the first sweep) wait for it.
  const prunedEarly: PruneEntry[] = [];
  let witnessPruning = (entry: PruneEntry): void => void prunedEarly.push(entry);
  const retention = createStoreRetention(lmdbStore.stores, {
    retentionMs: config.retentionMs ?? DEFAULT_RETENTION_MS,
    limitBytes: config.storeLimitBytes,
    sweepIntervalMs: config.retentionSweepIntervalMs,
    // With an exporter, nothing it has not exported is pruned, by age or by the limit.
    // The first sweep starts before the exporter is made: until then, nothing is exported.
    keep: (sidecar) => (config.exportOtlp === undefined ? Number.POSITIVE_INFINITY : (otlpExport?.exportedThrough(sidecar) ?? 0)),
    onPruned: (entry) => {
      config.onPruned?.(entry);
      witnessPruning(entry);
    },
    usedBytes: () => lmdbStore.usedBytes(),
    ...(config.diskReserveBytes === 0 ? {} : { disk: { dir: config.storeDir, reserveBytes: config.diskReserveBytes ?? DEFAULT_DISK_RESERVE_BYTES } }),
    registry: metrics.registry,
    log,
  });
  if (config.exportOtlp !== undefined) {
    const { pollMs, retryMaxMs, ...transport } = config.exportOtlp;
    otlpExport = createOtlpExport(lmdbStore.stores, { transport, pollMs, retryMaxMs, registry: metrics.registry, log, onExported: () => retention.full && void retention.sweep() });
  }
  const witness = createCollectorWitness({
    store: localStore,
    signer: await createCollectorKey({ serving, storeDir: config.storeDir }),
    checkpointIntervalMs: config.checkpointIntervalMs ?? CHECKPOINT_INTERVAL_MS,
    ...(ca === null ? {} : { caPem: ca.certPem }),
    onFork: (sidecar, fork) => {
      metrics.forksAfterWitness.inc();
      log('error', 'sidecar chain no longer holds a head the collector witnessed (fork after witness): refused and kept as evidence', { sidecar, batch: fork.batch, witnessed: fork.witnessed.head, witnessed_by: fork.witnessed.by, presented: fork.presented.head, presented_by: fork.presented.by, presented_batch: fork.presented.batch });
    },
    onTreeHead: () => metrics.treeHeadsSigned.inc(),
    log,
  });
  // Each pruning is a signed entry of the witness log (its tree heads cover it): a verifier knows what was removed, when and why.
  const logPruning = (entry: PruneEntry): void =>
    void witness.log.append({ entries: [{ kind: 'prune', sidecar: entry.sidecar, from_batch: entry.from_batch, to_batch: entry.to_batch, reason: entry.reason }] }).catch((err: unknown) => log('error', 'collector could not log a pruning in its witness log', { sidecar: entry.sidecar, err: (err as Error)?.message }));
  for (const entry of prunedEarly.splice(0)) logPruning(entry);
  witnessPruning = logPruning;
  const feed = createLiveFeed<StoredRun>({ onListenerError: (err) => log('error', 'collector onStored listener threw', { err: (err as Error)?.message }) });
  const hasher = createHashPool(config.hashThreads);
  // Fleet detection is a stage of the collector, not a listener: it sees every stored run first.
  let fleetAlerts: FleetAlerts | null = null;
  const directory = createMeshDirectory({ graceMs: config.directoryGraceMs ?? 2 * heartbeatIntervalMs, trustClaimedIp: config.directoryTrustClaimedIp ?? false, registry: metrics.registry, log });
  // Timers and the tier's replies start before ingest has opened (joining the tier takes seconds): until then they see no chains.
  const opened: { ingest?: Ingest } = {};
  const served: { view: DirectoryView; withServices?: DirectoryWithServices } = { view: directory };
  const reconciler = createCallReconciler({ env: lmdbStore.stores.env, graceMs: config.reconcileGraceMs ?? DEFAULT_RECONCILE_GRACE_MS, metrics: { reconciled: metrics.reconciled, disagreements: metrics.disagreements, pending: metrics.reconcilePending }, services: () => (opened.ingest === undefined ? [] : Array.from(opened.ingest.chains.values(), (c) => c.state.service)), meshAddress: (ip) => served.view.has(ip), log });
  const observe = (run: StoredRun): void => {
    try {
      if (config.reconcile !== false) reconciler.observe(run);
    } catch (err) {
      log('error', 'reconciliation failed on a stored run', { sidecar: run.sidecar.id, err: (err as Error).message });
    }
    try {
      if (fleetAlerts !== null) observeRun(fleetAlerts, run);
    } catch (err) {
      // Records are stored and verified; a record the detector cannot read must not fail the ack.
      log('error', 'fleet anomaly detection failed on a stored run', { sidecar: run.sidecar.id, err: (err as Error).message });
    }
  };
  // In the tier, each run is observed once fleet-wide: by the owner of its shard, as it indexes it.
  const anomalies = (): { active: FleetAnomaly[]; recent: FleetAnomaly[] } => ({ active: fleetAlerts?.active() ?? [], recent: fleetAlerts?.recent() ?? [] });
  let tier: Tier | null = null;
  if (config.jetstream !== undefined) {
    try {
      tier = await openTier(config.jetstream, { index: lmdbStore, storeDir: config.storeDir, onIndexed: observe, localSidecars: () => (opened.ingest === undefined ? [] : sidecars()), localAnomalies: () => anomalies(), directory, log });
    } catch (err) {
      await hasher.close();
      await reconciler.close();
      await lmdbStore.close();
      throw err;
    }
  }
  // In the tier, the stream and its chain heads are the truth; this replica's LMDB store holds its shard indexes.
  const store: CollectorStore = tier?.store ?? localStore;
  const ingest = await Ingest.open(store, hasher, (run) => {
    if (tier === null) observe(run);
    witness.onStored(run);
    feed.publish(run);
    retention.stored();
    otlpExport?.wake();
  }, serving === null || caCert === null ? null : [caCert], witness.heads);
  // Heartbeats witnessed before a restart still count: a sidecar that never came back is stale.
  for (const chain of ingest.chains.values()) chain.heartbeat ??= witness.heads.lastHeartbeat(chain.chainKey);
  await witness.start();
  const sidecars = (): SidecarStatus[] => {
    const chains = Array.from(ingest.chains.values());
    // sidecarStatuses keeps the chains' order.
    return sidecarStatuses(chains, heartbeatIntervalMs, Date.now()).map((s, i) => ({ ...s, fork_after_witness: witness.heads.forks(chains[i]!.chainKey).map(forkStatus) }));
  };
  opened.ingest = ingest;
  const alerts = config.alerts ?? defaultAlertOptions();
  if (alerts.intervalMs > 0) fleetAlerts = createFleetAlerts({ options: alerts, metrics, log });

  const maxBytes = config.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const grpcServer = new grpc.Server({
    'grpc.max_receive_message_length': maxBytes,
    'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
    ...FLOW_WINDOW_OPTION,
  });
  grpcServer.addService(COLLECTOR_SERVICE, { Sync: createSyncHandler({ ingest, store, metrics, auth, peer, serving, trustDomain, log, admit: () => retention.admit(), directory, onHello: (chain, der) => witness.certified(chain.chainKey, chain.state.key_id, chain.spki, der) }) });
  // What Watch serves and reconciliation asks: the pods (this collector's, or the tier's), and in a cluster the Services whose pods are all meshed.
  served.view = tier?.directory ?? directory;
  const kube: KubeServices | null = config.kubeServices === undefined ? null : watchKubeServices({ ...config.kubeServices, intervalMs: config.kubeServices.intervalMs ?? DEFAULT_KUBE_SERVICES_INTERVAL_MS, onChange: () => served.withServices?.refresh(), log });
  if (kube !== null) served.view = served.withServices = withClusterIps(served.view, kube);
  const watch = createWatchServer({ directory: served.view, peer, auth, keepaliveMs: config.directoryKeepaliveMs, registry: metrics.registry, log });
  grpcServer.addService(DIRECTORY_SERVICE, { Watch: watch.handler });
  if (ca !== null) {
    const certify = createCertifyHandler({ ca, serviceAccounts, trustDomain, certTtlMs, issued: () => metrics.certificatesIssued.inc(), refused: (reason) => metrics.identityRefusals.inc({ reason }), log });
    grpcServer.addService(IDENTITY_SERVICE, { Certify: certify });
  }
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync(`${config.bind}:${config.grpcPort}`, serving?.credentials ?? grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  if (!widenFlowWindow(grpcServer)) log('warn', 'collector could not raise the HTTP/2 flow-control window of this grpc-js version: large segments arrive 64 KiB at a time', {});
  // With identity on, reads are HTTPS with the serving certificate too: new handshakes take the renewed one.
  const httpTls = config.httpTls ?? serving?.tls();
  const httpServer = createHttpApi({ store, metrics, sidecars: tier?.sidecars ?? sidecars, subscribe: (l) => feed.subscribe(l), ready: tier?.ready ?? (() => readiness(retention, writes.problem())), anomalies: tier?.anomalies ?? anomalies, proof: (refs, opts) => witness.proof(refs, opts), reconciliation: (f) => reconciler.query(f), maxTailSubscribers: config.maxTailSubscribers, readAccess, tls: httpTls });
  if (config.httpTls === undefined && serving !== null) serving.onRenewed(() => (httpServer as unknown as TlsServer).setSecureContext({ ...serving.tls(), minVersion: 'TLSv1.2' }));
  let httpPort: number;
  try {
    httpPort = await listen(httpServer, config.httpPort, config.bind);
  } catch (err) {
    grpcServer.forceShutdown();
    await hasher.close();
    await otlpExport?.close();
    await retention.close();
    await witness.close();
    await reconciler.close();
    await store.close();
    throw err;
  }
  const host = config.bind.includes(':') ? `[${config.bind}]` : config.bind;
  const httpUrl = `${httpTls === undefined ? 'http' : 'https'}://${host}:${httpPort}`;
  log('info', 'collector listening', { grpc: `${host}:${grpcPort}`, http: httpUrl, reads: config.insecure ? 'open (--insecure)' : 'bearer credential', store: config.storeDir, auth: authSummary(tokens !== null, config.serviceAccounts) });

  let closing: Promise<void> | undefined;
  return {
    grpcPort,
    httpPort,
    grpcAddress: `${host}:${grpcPort}`,
    httpUrl,
    metrics,
    store,
    tier,
    ca,
    serving,
    witness,
    onStored: (listener) => feed.subscribe(listener),
    fleetAlerts,
    retention,
    otlpExport,
    reconciler,
    directory,
    fleetDirectory: served.view,
    get liveListeners() {
      return feed.size;
    },
    sidecars,
    close() {
      closing ??= (async () => {
        // Sidecar streams are long-lived: give them a moment to end, then cut them.
        serving?.close();
        watch.close();
        const force = setTimeout(() => grpcServer.forceShutdown(), SHUTDOWN_GRACE_MS);
        await new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
        clearTimeout(force);
        httpServer.closeAllConnections();
        await new Promise<void>((resolve) => httpServer.close(() => resolve()));
        await Promise.all(Array.from(ingest.chains.values(), (c) => c.settled()));
        await hasher.close();
        fleetAlerts?.close();
        await otlpExport?.close();
        await retention.close();
        await witness.close();
        await reconciler.close();
        kube?.close();
        served.withServices?.close();
        directory.close();
        await store.close();
      })();
      return closing;
    },
  };
}

/** /readyz: not ready while the store refuses segments (at its bound) or its commits fail (a full disk). */
function readiness(retention: StoreRetention, writeProblem: string | undefined): { ok: boolean; reason?: string } {
  const reason = retention.problem ?? writeProblem;
  return reason === undefined ? { ok: true } : { ok: false, reason };
}

/** For the listening line: which credentials are accepted. */
function authSummary(shared: boolean, serviceAccounts: ServiceAccountKeys | undefined): string {
  const kinds = [shared ? 'token' : '', serviceAccounts !== undefined ? `service-account (issuer ${serviceAccounts.issuer}, keys ${serviceAccounts.jwks})` : ''].filter(Boolean);
  return kinds.length === 0 ? 'none (--insecure)' : kinds.join(' + ');
}

/** Every record of a stored run goes through the fleet's anomaly detector, under its sidecar's service, as the hashing workers read it. */
function observeRun(fleet: FleetAlerts, run: StoredRun): void {
  for (const b of run.batches) for (const group of b.exchanges) fleet.observeGroup(run.sidecar.service, group);
}

/** A fork after witness as /v1/sidecars shows it. */
function forkStatus(f: ForkAfterWitness): { batch: number; witnessed_head: string; witnessed_by: string; presented_head: string; presented_by: string; presented_batch: number; detected: string } {
  return { batch: f.batch, witnessed_head: f.witnessed.head, witnessed_by: f.witnessed.by, presented_head: f.presented.head, presented_by: f.presented.by, presented_batch: f.presented.batch, detected: new Date(f.detected_unix_ms).toISOString() };
}

function listen(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}
