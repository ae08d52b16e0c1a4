import { sign } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { collectorAckSigningInput, type CollectorAckKind } from '../../../ledger/chain.js';
import { ChainBroken, type VerifyFailure } from '../../../ledger/link-verifier.js';
import type { Logger } from '../../../command/log.js';
import type { CollectorMessage, RefusalCode, Segment, SidecarMessage, SyncServerStream } from '../../../wire/sync-wire.js';
import type { CollectorMetrics } from '../collector-metrics.js';
import type { CollectorStore } from '../collector-store.js';
import type { Ingest, RetainedStart } from './ingest.js';
import type { SidecarChain } from './sidecar-chain.js';
import type { WorkloadIdentity } from './service-account-tokens.js';
import { sidecarIdOf, type StreamAuth } from './stream-auth.js';
import type { PeerVerdict } from './peer-identity.js';
import type { ServingIdentity } from './serving-identity.js';
import { spiffeIdOf } from '../../../ledger/spiffe-id.js';
import { chainKey } from '../store/chain-key.js';
import type { DirectoryListing, MeshDirectoryBook } from '../directory/mesh-directory.js';

/**
 * The Sync stream, one per sidecar connection: authenticates it, hands each message to ingest in
 * order, and answers in order: Welcome after Hello, one Ack per Segment once it is stored, or one
 * Refusal and the end of the stream. Verification of the next segment goes on while the previous
 * one is being written; acks still leave in order. With a serving identity (the mesh CA's TLS)
 * the Welcome carries its certificate chain and the Welcome and every Ack are signed with its key
 * (wire/sync.proto), so a sidecar believes only this collector's acknowledgements.
 */

/** Segments received but not yet acked on one stream; past this the stream stops reading (backpressure). */
const MAX_UNACKED_SEGMENTS = 64;
/** Record bytes kept per refused segment as evidence: with EVIDENCE_MAX_ENTRIES, at most 64 MiB of evidence. */
const EVIDENCE_MAX_RECORD_BYTES = 64 * 1024;

const STATUS_OF: Record<RefusalCode, grpc.status> = {
  unauthenticated: grpc.status.UNAUTHENTICATED,
  'key-mismatch': grpc.status.PERMISSION_DENIED,
  malformed: grpc.status.INVALID_ARGUMENT,
  'bad-root': grpc.status.FAILED_PRECONDITION,
  'bad-chain': grpc.status.FAILED_PRECONDITION,
  'bad-signature': grpc.status.FAILED_PRECONDITION,
  gap: grpc.status.FAILED_PRECONDITION,
  fork: grpc.status.FAILED_PRECONDITION,
};

export interface SyncDeps {
  ingest: Ingest;
  store: CollectorStore;
  metrics: CollectorMetrics;
  /** null: --insecure, no credential checked. */
  auth: StreamAuth | null;
  /** With the mesh CA's TLS: the identity the client certificate proves (peer-identity.ts); null: plaintext, no certificate asked. */
  peer: ((call: SyncServerStream) => PeerVerdict) | null;
  /** The collector's key and CA certificate, which sign Welcomes and Acks; null: they go unsigned (--insecure, no mesh CA). */
  serving: Pick<ServingIdentity, 'privateKey' | 'chainPem'> | null;
  /** The SPIFFE trust domain (--trust-domain) a ServiceAccount token's identity is written in, without a client certificate. */
  trustDomain: string;
  log: Logger;
  /** Told of every accepted Hello, with the client certificate (DER) of an mTLS stream: the mesh CA's certification of the key it ships with. */
  onHello?: (chain: SidecarChain, certificateDer: Buffer | undefined) => void;
  /** Whether a new segment may be stored now: undefined if so, else why not (the store at its bound); absent: always. */
  admit?: () => string | undefined;
  /** The mesh directory: each Hello's pod IP claim, listed while the stream lasts (directory/mesh-directory.ts); absent: none kept. */
  directory?: Pick<MeshDirectoryBook, 'claim'>;
}

export function createSyncHandler(deps: SyncDeps): grpc.handleBidiStreamingCall<SidecarMessage, CollectorMessage> {
  return (call) => void new SyncSession(deps, call as SyncServerStream).run();
}

class SyncSession {
  #deps: SyncDeps;
  #call: SyncServerStream;
  #chain: SidecarChain | undefined;
  /** Where the sidecar said its retained chain starts (its Hello): the claim a loss is checked against. */
  #retained: RetainedStart | undefined;
  /** The sidecar key the Hello presented: what the Welcome and the Acks are signed for. */
  #keyId = '';
  #acks: Promise<void> = Promise.resolve();
  #unacked = 0;
  #over = false;
  /** The workload its ServiceAccount token proved; null for a shared token or --insecure. */
  #identity: WorkloadIdentity | null = null;
  /** The SPIFFE ID the client certificate proved; null without TLS. */
  #spiffeId: string | null = null;
  /** That client certificate (DER): it may endorse a key change (key-rotation.ts). */
  #peerCertificate: Buffer | undefined;
  /** This stream's entry in the mesh directory, if listed. */
  #listing: DirectoryListing | null = null;
  /** The call closed or was cancelled: nothing more is listed for it. */
  #gone = false;

  constructor(deps: SyncDeps, call: SyncServerStream) {
    this.#deps = deps;
    this.#call = call;
    deps.metrics.streamsActive.inc();
    let counted = true;
    const gone = (): void => {
      if (counted) deps.metrics.streamsActive.dec();
      counted = false;
      this.#gone = true;
      this.#release();
    };
    call.on('close', gone);
    call.on('cancelled', gone);
    // A stream error is how the call ends when the peer goes away; the session already stops then.
    call.on('error', () => (this.#over = true));
  }

  async run(): Promise<void> {
    if (!(await this.#authenticate())) return;
    try {
      // destroyOnReturn off: leaving the loop on a refusal must not destroy the call before the
      // Refusal and its status are flushed (the default iterator's return() does).
      for await (const msg of this.#call.iterator({ destroyOnReturn: false }) as AsyncIterable<SidecarMessage>) {
        if (this.#over) return;
        await this.#handle(msg);
        if (this.#unacked >= MAX_UNACKED_SEGMENTS) await this.#acks;
      }
      await this.#acks;
      if (!this.#over) this.#call.end();
    } catch (err) {
      if (this.#over) return;
      if (err instanceof ChainBroken) return this.#refuse(err.failure);
      this.#unavailable(err);
    }
  }

  /** Checks the stream's credential; false once it is refused (and the stream ended). */
  async #authenticate(): Promise<boolean> {
    const { auth, metrics, log } = this.#deps;
    if (auth === null) return this.#checkPeer();
    const header = this.#call.metadata.get('authorization')[0];
    const verdict = await auth.check(typeof header === 'string' ? header : undefined);
    if (verdict.ok) {
      this.#identity = verdict.identity;
      return this.#checkPeer();
    }
    metrics.tokenRefusals.inc({ reason: verdict.reason });
    log('warn', 'collector refused a sidecar credential', { reason: verdict.reason, problem: verdict.problem });
    // The issuer's keys out of reach is the collector's trouble, not the sidecar's: retry soon.
    if (verdict.reason === 'keys-unavailable') this.#end(grpc.status.UNAVAILABLE, verdict.problem);
    else this.#refuse({ code: 'unauthenticated', problem: `${verdict.reason}: ${verdict.problem}` });
    return false;
  }

  /** With TLS: the client certificate must come from the mesh CA and name the token's namespace and service account. */
  #checkPeer(): boolean {
    if (this.#deps.peer === null) return true;
    const peer = this.#deps.peer(this.#call);
    const id = this.#identity;
    if (peer.ok && (id === null || (peer.parts.namespace === id.namespace && peer.parts.serviceAccount === id.serviceAccount))) {
      this.#spiffeId = peer.spiffeId;
      this.#peerCertificate = peer.der;
      return true;
    }
    const problem = peer.ok ? `the client certificate names ${peer.spiffeId}, the token ${id?.namespace}/${id?.serviceAccount}` : peer.problem;
    this.#deps.log('warn', 'collector refused a sidecar certificate', { problem });
    this.#refuse({ code: 'unauthenticated', problem: `certificate: ${problem}` });
    return false;
  }

  /**
   * The SPIFFE ID this stream's writer proved, stamped on the records it stores: the client
   * certificate's, else the ServiceAccount token's in the collector's trust domain; null for a
   * shared token or --insecure, which prove no workload.
   */
  get spiffeId(): string | null {
    const id = this.#identity;
    return this.#spiffeId ?? (id === null ? null : spiffeIdOf({ trustDomain: this.#deps.trustDomain, namespace: id.namespace, serviceAccount: id.serviceAccount }));
  }

  async #handle(msg: SidecarMessage): Promise<void> {
    const { ingest } = this.#deps;
    if (msg.body === 'hello') {
      if (this.#chain !== undefined) throw new ChainBroken({ code: 'malformed', problem: 'a second Hello on one stream' });
      if (this.#identity !== null && msg.hello?.sidecar_id !== sidecarIdOf(this.#identity)) {
        this.#deps.metrics.tokenRefusals.inc({ reason: 'wrong-sidecar-id' });
        throw new ChainBroken({ code: 'unauthenticated', problem: `wrong-sidecar-id: the token of pod ${sidecarIdOf(this.#identity)} cannot write as sidecar ${JSON.stringify(msg.hello?.sidecar_id)}` });
      }
      // The pod uid is the incarnation: a recreated pod of the same name ships a chain of its own.
      const incarnation = this.#identity?.podUid ?? '';
      const known = ingest.chains.has(chainKey(String(msg.hello?.sidecar_id), incarnation));
      const chain = await ingest.hello(msg.hello, incarnation, this.#peerCertificate);
      if (!known && incarnation !== '') {
        const earlier = Array.from(ingest.chains.values(), (c) => c.state).filter((s) => s.id === chain.state.id && s.incarnation !== incarnation);
        if (earlier.length > 0) this.#deps.log('info', 'collector: a new incarnation of a sidecar starts a chain of its own; the earlier ones stay as they are', { sidecar: chain.state.id, incarnation, earlier: earlier.map((s) => s.incarnation ?? '') });
      }
      chain.owner?.supersede();
      chain.owner = this;
      this.#chain = chain;
      this.#deps.onHello?.(chain, this.#spiffeId === null ? undefined : this.#call.getAuthContext().sslPeerCertificate?.raw);
      // Listed by the certificate's identity only: a token proves a pod, not the key that answers mTLS.
      if (!this.#over && !this.#gone) this.#listing = this.#deps.directory?.claim({ podIp: msg.hello.pod_ip, source: this.#call.getPeer(), identity: this.#spiffeId, sidecarId: chain.state.id, service: chain.state.service, chainKey: chain.chainKey }) ?? null;
      // What an older stream of this sidecar had in flight lands first: the Welcome is the stored truth.
      await chain.settled();
      this.#retained = { first_batch: msg.hello.first_batch, base_head: msg.hello.base_head };
      this.#keyId = msg.hello.key_id;
      chain.lastSeenUnixMs = Date.now();
      const { last_batch, head } = chain.state.position;
      const { serving } = this.#deps;
      this.#write({ welcome: { acked_batch: last_batch, acked_head: head, ...(serving === null ? {} : { cert_chain_pem: serving.chainPem }), ...this.#signed('welcome', last_batch, head) } });
      return;
    }
    const chain = this.#chain;
    if (chain === undefined) throw new ChainBroken({ code: 'malformed', problem: `the first message of a stream must be a Hello, not ${String(msg.body)}` });
    chain.lastSeenUnixMs = Date.now();
    if (msg.body === 'heartbeat') return ingest.heartbeat(chain, msg.heartbeat);
    if (msg.body === 'segment') {
      const full = this.#deps.admit?.();
      // Retryable: the sidecar keeps the segment in its journal and sends it again after its backoff.
      if (full !== undefined) return this.#end(grpc.status.RESOURCE_EXHAUSTED, full);
      return this.#segment(chain, msg.segment);
    }
    throw new ChainBroken({ code: 'malformed', problem: 'a message with no body' });
  }

  async #segment(chain: SidecarChain, segment: Segment): Promise<void> {
    const { ingest, metrics } = this.#deps;
    const startedAt = performance.now();
    metrics.batchesReceived.inc(segment?.links?.length ?? 0);
    let outcome;
    try {
      outcome = await ingest.segment(chain, segment, this.#retained, this.spiffeId);
    } catch (err) {
      if (err instanceof ChainBroken) this.#keepEvidence(err.failure, segment);
      throw err;
    }
    metrics.duplicateBatches.inc(outcome.duplicates);
    if (outcome.lost !== null) {
      metrics.lostBatches.inc(outcome.lost.to_batch - outcome.lost.from_batch + 1);
      this.#deps.log('error', 'sidecar no longer retains batches this collector lacks: recorded as lost, the chain goes on after them', { sidecar: chain.state.id, from_batch: outcome.lost.from_batch, to_batch: outcome.lost.to_batch });
    }
    this.#unacked++;
    const { stored, through_batch, head, records } = outcome;
    this.#acks = Promise.all([this.#acks, stored]).then(
      () => {
        metrics.recordsStored.inc(records);
        metrics.ingestDuration.observe((performance.now() - startedAt) / 1000);
        this.#unacked--;
        this.#write({ ack: { through_batch, head, ...this.#signed('ack', through_batch, head) } });
      },
      (err: unknown) => this.#unavailable(err),
    );
  }

  /** The serving key's signature of what this Welcome or Ack states about this sidecar's chain; nothing without one. */
  #signed(kind: CollectorAckKind, batch: number, head: string): { sig?: string } {
    const { serving } = this.#deps;
    if (serving === null) return {};
    return { sig: sign(null, collectorAckSigningInput(kind, this.#chain!.state.id, this.#keyId, batch, head), serving.privateKey).toString('hex') };
  }

  /** A newer stream of the same sidecar took over. */
  supersede(): void {
    this.#end(grpc.status.ABORTED, `sidecar ${this.#chain?.chainKey} opened a newer stream`);
  }

  #write(msg: CollectorMessage): void {
    if (!this.#over) this.#call.write(msg);
  }

  #refuse(failure: VerifyFailure): void {
    const { metrics, log } = this.#deps;
    const code = failure.code ?? 'malformed';
    // A stream of another key than the pinned one is most likely a journal someone else reopened: say so, whatever broke first.
    const presented = this.#chain?.presented?.keyId;
    const pinned = this.#chain?.state.key_id;
    if (presented !== undefined && presented !== pinned && !failure.problem.includes(presented)) failure = { ...failure, problem: `${failure.problem} (this stream presents key ${presented}, not the pinned key ${pinned})` };
    metrics.verificationFailures.inc({ reason: code });
    log('warn', 'collector refused a stream', { sidecar: this.#chain?.state.id, incarnation: this.#chain?.state.incarnation, code, batch: failure.batch, seq: failure.seq, reason: failure.problem });
    if (this.#chain !== undefined) this.#chain.refusal = { code, reason: failure.problem, unix_ms: Date.now() };
    this.#write({ refusal: { code, reason: failure.problem, batch: failure.batch ?? 0 } });
    this.#end(STATUS_OF[code], `${code}: ${failure.problem}`);
  }

  /** A store failure is the collector's, not the sidecar's: UNAVAILABLE, and the sidecar retries later. */
  #unavailable(err: unknown): void {
    if (this.#over) return;
    this.#deps.log('error', 'collector store write failed: stream ended unacked', { sidecar: this.#chain?.state.id, err: (err as Error)?.message });
    this.#end(grpc.status.UNAVAILABLE, 'the collector could not store the segment; retry later');
  }

  #end(code: grpc.status, details: string): void {
    if (this.#over) return;
    this.#over = true;
    this.#release();
    // emit('error') on a grpc-js server stream flushes written messages, then sends this status.
    this.#call.emit('error', { code, details, metadata: new grpc.Metadata() });
  }

  #release(): void {
    this.#listing?.release();
    // Only if still this session's: a newer stream may already own it.
    if (this.#chain?.owner === this) this.#chain.owner = undefined;
  }

  #keepEvidence(failure: VerifyFailure, segment: Segment): void {
    const { store, log } = this.#deps;
    let budget = EVIDENCE_MAX_RECORD_BYTES;
    let truncated = false;
    const links = (Array.isArray(segment?.links) ? segment.links : []).map((l) => ({
      ...l,
      records: (Array.isArray(l?.records) ? l.records : []).flatMap((r) => {
        if (!Buffer.isBuffer(r) || r.length > budget) return (truncated = true), [];
        budget -= r.length;
        return [r.toString('base64')];
      }),
    }));
    const incarnation = this.#chain?.state.incarnation;
    const evidence = { received_unix_ms: Date.now(), sidecar_id: this.#chain?.state.id ?? '', ...(incarnation === undefined ? {} : { incarnation }), code: failure.code ?? 'malformed', reason: failure.problem, batch: failure.batch ?? 0, links, truncated };
    store.keepEvidence(evidence).catch((err: unknown) => log('error', 'collector could not keep evidence of a refused segment', { err: (err as Error)?.message }));
  }
}
