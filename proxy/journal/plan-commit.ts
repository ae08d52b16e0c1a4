import type { SigningKey } from '../../ledger/keys.js';
import { EMPTY_ROOT, epochRoot, GENESIS_HEAD, linkHead } from '../../ledger/chain.js';
import { endorseEpoch } from '../../ledger/key-endorsement.js';
import type { BatchHeader, JournalHead } from '../../ledger/journal-layout.js';

/**
 * What one journal commit writes to the chain, decided before the transaction: numbered links,
 * each with its head, the last one signed. Pure, so the writer's numbering and linking can be
 * read (and tested) apart from LMDB.
 */

/** A sealed batch of records waiting for its link. */
export interface SealedLink {
  count: number;
  /** Merkle root, lowercase hex. */
  root: string;
  sealedUnixMs: number;
}

export interface CommitPlanInput {
  /** The last committed state. */
  head: JournalHead;
  /** This boot's epoch number. */
  epoch: number;
  /** true until this boot's epoch link is committed: the commit opens with it. */
  openEpoch: boolean;
  /** Record batches, in sealing order. */
  sealed: readonly SealedLink[];
  /** Time of the epoch or checkpoint link, if the commit has one. */
  nowUnixMs: number;
  signer: SigningKey;
  /** The key the chain was signed with so far, when it differs from `signer`, and its private half if held: it endorses the new epoch's key. */
  endorser?: SigningKey;
}

export interface CommitPlan {
  /** Every link of the commit, in order; the last carries `key` and `sig`. */
  headers: BatchHeader[];
  /** Where the journal ends once the commit lands. */
  head: Required<JournalHead>;
}

/** A commit with nothing else to link (a heartbeat, a probe) gets a checkpoint link, so it has a head to sign. */
export function planCommit({ head, epoch, openEpoch, sealed, nowUnixMs, signer, endorser }: CommitPlanInput): CommitPlan {
  let seq = head.last_seq;
  let batch = head.last_batch;
  let prev = head.head ?? GENESIS_HEAD;
  const headers: BatchHeader[] = [];
  const link = (fields: Omit<BatchHeader, 'batch' | 'first_seq' | 'epoch' | 'head'>): BatchHeader => {
    const header = { batch: ++batch, first_seq: seq + 1, epoch, ...fields, head: '' };
    header.head = prev = linkHead(prev, header);
    seq += fields.count;
    headers.push(header);
    return header;
  };
  if (openEpoch) {
    const endorsed = endorser === undefined || endorser.keyId === signer.keyId ? {} : endorseEpoch(endorser, prev, epoch, signer.publicKeySpki);
    link({ kind: 'epoch', count: 0, root: epochRoot(signer.publicKeySpki), sealed_unix_ms: nowUnixMs, key: signer.keyId, ...endorsed });
  }
  for (const s of sealed) link({ kind: 'records', count: s.count, root: s.root, sealed_unix_ms: s.sealedUnixMs });
  if (headers.length === 0) link({ kind: 'checkpoint', count: 0, root: EMPTY_ROOT, sealed_unix_ms: nowUnixMs });
  const last = headers[headers.length - 1];
  last.key = signer.keyId;
  last.sig = signer.signHead(last.head);
  return { headers, head: { last_seq: seq, last_batch: batch, head: prev, epoch } };
}
