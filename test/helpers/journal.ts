import { open } from 'lmdb';
import { createAuditPipeline, type AuditPipelineOptions } from '../../proxy/audit/pipeline.js';
import type { AuditRecord } from '../../ledger/record.js';
import { readBatches, withSnapshot } from '../../ledger/read-journal.js';
import { HEAD_KEY, openJournalStores, type BatchHeader, type JournalStores } from '../../ledger/journal-layout.js';
import { verifySnapshot, type VerifyOptions, type VerifyReport } from '../../ledger/verify-journal.js';

export function makeRecord(i: number, extra: Partial<AuditRecord> = {}): AuditRecord {
  return {
    'audit.kind': 'http',
    'audit.phase': 'final',
    'audit.direction': 'inbound',
    'audit.service': 'ledger',
    'audit.start_unix_ms': Date.now(),
    'http.request.method': 'GET',
    'url.path': `/items/${i}`,
    'http.response.status_code': 200,
    ...extra,
  };
}

/**
 * Writes a real journal: `commits` rounds of `perCommit` records, each round awaited, so the
 * journal holds several commits, each with its own signed head. Returns after close.
 */
export async function writeJournal(opts: Partial<AuditPipelineOptions> & { journalDir: string }, commits = 4, perCommit = 10, make: (i: number) => AuditRecord = makeRecord): Promise<void> {
  // No checkpoint between the commits unless asked for, however slow the machine: tests take
  // segments by their place in the chain.
  const pipeline = await createAuditPipeline({ checkpointIntervalMs: 3_600_000, ...opts });
  try {
    for (let c = 0; c < commits; c++) {
      const round = Array.from({ length: perCommit }, (_, i) => make(c * perCommit + i));
      await Promise.all(round.map((rec) => pipeline.recordDurable(rec)));
    }
  } finally {
    await pipeline.close();
  }
}

/** Verifies the journal in `dir` in one snapshot, as `auditmesh verify` does. */
export function verifyDir(dir: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  return withSnapshot(dir, (snapshot) => verifySnapshot(snapshot, opts));
}

/**
 * Edits a closed journal's files directly, as an attacker with write access would: opens the
 * LMDB environment itself, runs `edit` in one write transaction, closes it.
 */
export async function tamper(dir: string, edit: (stores: JournalStores) => void): Promise<void> {
  const stores = openJournalStores(open({ path: dir }));
  try {
    stores.env.transactionSync(() => edit(stores));
  } finally {
    await stores.env.close();
  }
}

/**
 * Cuts a closed journal back to the end of its first signed commit of records, as an attacker
 * with write access would: the later links and records removed, the head entry rewritten to
 * match, so the journal looks whole. Returns the last link kept.
 */
export async function truncateToFirstCommit(journalDir: string): Promise<BatchHeader> {
  const headers = await readBatches(journalDir);
  const keep = headers.find((h) => h.kind === 'records' && h.sig !== undefined)!;
  const lastSeq = Math.max(...headers.map((h) => h.first_seq + h.count - 1));
  await tamper(journalDir, ({ batches, records, meta }) => {
    for (const h of headers) if (h.batch > keep.batch) batches.removeSync(h.batch);
    for (let seq = keep.first_seq + keep.count; seq <= lastSeq; seq++) records.removeSync(seq);
    meta.putSync(HEAD_KEY, { last_batch: keep.batch, last_seq: keep.first_seq + keep.count - 1, head: keep.head, epoch: keep.epoch });
  });
  return keep;
}
