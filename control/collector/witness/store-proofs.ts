import { realpathSync } from 'node:fs';
import { open } from 'lmdb';
import type { EvidenceBundle } from '../../../ledger/evidence-bundle.js';
import { runQuery, type CollectedRecord } from '../api/record-query.js';
import type { RecordQuery } from '../collector-store.js';
import { openIdIndexDbs } from '../store/id-index.js';
import { candidates, MAX_SPAN } from '../store/lmdb-store.js';
import { MAX_ID_MATCHES } from '../store/id-index.js';
import { openCollectorStores, refuseEarlierLayout } from '../store/store-layout.js';
import { buildBundle, ProofError, type RecordRef } from './bundle-builder.js';
import { openWitnessDbs, WITNESS_DB_NAMES } from './witness-dbs.js';
import { verifyWitness, type WitnessReport } from './verify-witness.js';
import { certificateBlocks } from '../../../ledger/certified-key.js';

/**
 * Proofs from a collector store on disk, read only (`auditmesh export STORE`, `auditmesh verify
 * STORE --record`): against the newest tree head the collector signed and kept. Records stored
 * after it are not covered: a running collector proves them (`--collector URL`).
 */
export interface StoreProofs {
  /** Matching records, newest first, as /v1/records answers. */
  query(q: RecordQuery): AsyncIterable<CollectedRecord>;
  bundle(refs: readonly RecordRef[], source?: string): EvidenceBundle;
  /** The witness log checked against itself, its tree heads and the stored links. */
  verifyWitness(): WitnessReport;
  close(): Promise<void>;
}

export function openStoreProofs(dir: string): StoreProofs {
  const env = open({ path: realpathSync(dir), readOnly: true, maxDbs: 64 });
  const names = Array.from(env.getKeys(), String);
  try {
    refuseEarlierLayout(dir, names);
  } catch (err) {
    void env.close();
    throw err;
  }
  const stores = openCollectorStores(env);
  const ids = openIdIndexDbs(env);
  const query = (q: RecordQuery): AsyncIterable<CollectedRecord> => runQuery({ query: (rq) => candidates(stores, ids, () => undefined, rq, stores.meta.get(MAX_SPAN) ?? 0, MAX_ID_MATCHES) }, q);
  // Read only, a database that is not there cannot be opened: a store no collector of this version ran on has no log yet.
  if (!WITNESS_DB_NAMES.every((name) => names.includes(name))) {
    return {
      query,
      bundle: () => {
        throw new ProofError(409, 'this store has no witness log yet: a collector of this version logs it at its first start');
      },
      verifyWitness: () => ({ ok: true, entries: 0, prunes: 0, tree_heads: 0, unlogged: stores.links.getCount() }),
      close: () => env.close(),
    };
  }
  const witness = openWitnessDbs(env);
  const latest = Array.from(witness.heads.getRange({ reverse: true, limit: 1 }), ({ value }) => value)[0];
  // The serving chain ends in the mesh CA's certificate (mesh-ca.ts): the CA the bundle carries, which verify tells to pin.
  const chains = Array.from(witness.keys.getRange(), ({ value }) => value.chain_pem).filter((c): c is string => c !== undefined);
  const caPem = chains.length === 0 ? undefined : certificateBlocks(chains[chains.length - 1]).at(-1);
  return {
    query,
    bundle: (refs, source) => buildBundle({ stores, witness, latest, ...(caPem === undefined ? {} : { caPem }) }, refs, source),
    verifyWitness: () => verifyWitness(stores, witness),
    close: () => env.close(),
  };
}
