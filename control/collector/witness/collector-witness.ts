import { chainKeyOf } from '../store/chain-key.js';
import { X509Certificate } from 'node:crypto';
import type { Logger } from '../../../command/log.js';
import type { EvidenceBundle } from '../../../ledger/evidence-bundle.js';
import type { CollectorStore } from '../collector-store.js';
import type { CollectorSigner } from '../collector-key.js';
import type { StoredRun } from '../ingest/sidecar-chain.js';
import type { CollectorStores } from '../store/store-layout.js';
import { buildBundle, NotWitnessedYet, ProofError, type RecordRef } from './bundle-builder.js';
import { HeadWitness } from './head-witness.js';
import type { ForkAfterWitness } from './witness-dbs.js';
import { WitnessLog } from './witness-log.js';

/**
 * The collector's witness, wired: its log (witness-log.ts) follows every stored run, its head
 * witness (head-witness.ts) checks heartbeats and segments, a tree head is signed every
 * checkpoint interval, and proofs are made on request against the newest one (signed at once
 * when a record's head is logged but no tree head covers it yet).
 */

export interface CollectorWitnessOptions {
  store: CollectorStore & { readonly stores: CollectorStores };
  signer: CollectorSigner;
  checkpointIntervalMs: number;
  /** The mesh CA certificate (PEM) to put in bundles; absent without the mesh CA. */
  caPem?: string;
  onFork(sidecar: string, fork: ForkAfterWitness): void;
  onTreeHead?(): void;
  log: Logger;
}

export interface CollectorWitness {
  readonly log: WitnessLog;
  readonly heads: HeadWitness;
  /** Logs a run the store committed. */
  onStored(run: StoredRun): void;
  /** Logs what the store holds and the log does not, signs a first tree head, and starts the checkpoint timer. */
  start(): Promise<void>;
  /** A bundle proving these records against the newest tree head, or the stored one of size `treeSize`. */
  proof(refs: readonly RecordRef[], opts?: { treeSize?: number; source?: string }): Promise<EvidenceBundle>;
  /** The mesh CA certificate a sidecar's mTLS stream presented, when it certifies the key it ships with. */
  certified(sidecar: string, keyId: string, spki: Buffer, certificateDer: Buffer | undefined): void;
  close(): Promise<void>;
}

export function createCollectorWitness(opts: CollectorWitnessOptions): CollectorWitness {
  const log = new WitnessLog(opts.store.stores.env, opts.signer, opts.log);
  const heads = new HeadWitness({ witness: log, store: opts.store, onFork: opts.onFork });
  let timer: NodeJS.Timeout | undefined;
  // Runs are logged one after another, so a sidecar's links enter the log in chain order.
  let stored: Promise<void> = Promise.resolve();
  const sign = async (): Promise<void> => {
    await log.checkpoint();
    opts.onTreeHead?.();
  };
  const links = (sidecar: string, from: number, to: number, limit: number) =>
    Array.from(opts.store.stores.links.getRange({ start: [sidecar, from], end: [sidecar, to + 1], limit }), ({ value }) => value);
  return {
    log,
    heads,
    onStored(run) {
      stored = stored.then(() => log.logStored(chainKeyOf(run.sidecar), run.links, run.sidecar.position.last_batch, links)).catch((err: unknown) => opts.log('error', 'collector witness log could not log a stored run; it is logged again at the next start', { sidecar: chainKeyOf(run.sidecar), err: (err as Error)?.message }));
    },
    async start() {
      const caught = await log.catchUp(opts.store, links);
      if (caught > 0) opts.log('info', 'collector witness log caught up with the store', { links: caught, tree_size: log.size });
      await sign();
      timer = setInterval(() => void sign().catch((err: unknown) => opts.log('error', 'collector could not sign a tree head', { err: (err as Error)?.message })), opts.checkpointIntervalMs);
      timer.unref();
    },
    async proof(refs, { treeSize, source } = {}) {
      const pinned = treeSize === undefined ? undefined : log.dbs.heads.get(treeSize);
      if (treeSize !== undefined && pinned === undefined) throw new ProofError(404, `no signed tree head of size ${treeSize} is kept`);
      const src = { stores: opts.store.stores, witness: log.dbs, latest: pinned ?? log.latest, ...(opts.caPem === undefined ? {} : { caPem: opts.caPem }) };
      try {
        return buildBundle(src, refs, source);
      } catch (err) {
        // Pinned to a tree head: what it does not cover cannot be proved against it.
        if (!(err instanceof NotWitnessedYet) || pinned !== undefined) throw err;
      }
      // Its head is stored, perhaps not logged yet, and no tree head covers it: log, sign, prove.
      await stored;
      await log.settled();
      if (log.latest === undefined || log.latest.tree_size < log.size) await sign();
      return buildBundle({ ...src, latest: log.latest }, refs, source);
    },
    certified(sidecar, keyId, spki, der) {
      if (der === undefined) return;
      try {
        if (!new X509Certificate(der).publicKey.export({ format: 'der', type: 'spki' }).equals(spki)) return;
      } catch {
        return;
      }
      const cert = der.toString('base64');
      if (log.dbs.certs.get([sidecar, keyId]) === cert) return;
      void log.append({ entries: [], also: (dbs) => void dbs.certs.put([sidecar, keyId], cert) }).catch(() => {});
    },
    async close() {
      clearInterval(timer);
      await stored;
      await log.settled();
      // A last tree head over everything logged (a pruning just before the stop too), so proofs from the stopped store cover it.
      if (log.latest === undefined || log.latest.tree_size < log.size) await sign().catch((err: unknown) => opts.log('error', 'collector could not sign a last tree head of its witness log', { err: (err as Error)?.message }));
    },
  };
}
