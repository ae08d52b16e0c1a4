import test from 'ava';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { createAuditPipeline } from '../proxy/audit/pipeline.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import { epochRoot, GENESIS_HEAD, linkHead } from '../ledger/chain.js';
import { readBatches } from '../ledger/read-journal.js';
import { HEAD_KEY, type BatchHeader, type JournalHead, type JournalStores } from '../ledger/journal-layout.js';
import { makeRecord, tamper, verifyDir, writeJournal } from './helpers/journal.js';
import { tempDir } from './helpers/sidecar.js';

// One real journal, written once: 4 commits of 10 strict records in batches of at most 4, each
// commit ending in a signed head. Every test verifies or tampers with its own copy.
const key = ephemeralSigningKey();
let templateParent: string;
let template: string;

test.before(async () => {
  templateParent = await mkdtemp(join(tmpdir(), 'auditmesh-verify-'));
  template = join(templateParent, 'journal');
  await writeJournal({ journalDir: template, maxBatchRecords: 4, signingKey: key }, 4, 10);
});
test.after.always(() => rm(templateParent, { recursive: true, force: true }));

async function copyOf(t: ExecutionContext): Promise<string> {
  const dir = join(await tempDir(t), 'journal');
  await cp(template, dir, { recursive: true });
  return dir;
}

const batchOf = (headers: BatchHeader[], seq: number): BatchHeader => headers.find((h) => h.kind === 'records' && seq >= h.first_seq && seq < h.first_seq + h.count)!;

test('an untouched journal verifies: every record, root, link and signature', async (t) => {
  const report = await verifyDir(await copyOf(t));
  t.true(report.ok, report.failure?.problem);
  t.like(report, { records: 40, epochs: 1, first_seq: 1, last_seq: 40, keys: [key.keyId] });
  t.true(report.batches >= 10);
});

test("a record's bytes changed: its batch's Merkle root no longer matches", async (t) => {
  const dir = await copyOf(t);
  const batch = batchOf(await readBatches(dir), 7);
  await tamper(dir, ({ records }) => records.putSync(7, Buffer.from(records.get(7)!.toString().replace('"/items/6"', '"/items/66"'))));
  const report = await verifyDir(dir);
  t.false(report.ok);
  t.is(report.failure?.batch, batch.batch);
  t.regex(report.failure!.problem, /Merkle root of its records does not match its header/);
});

test('a record changed and its batch root recomputed: the chain link breaks at that batch', async (t) => {
  const dir = await copyOf(t);
  const batch = batchOf(await readBatches(dir), 7);
  const { leafHash, merkleRoot } = await import('../ledger/merkle.js');
  await tamper(dir, ({ records, batches }) => {
    records.putSync(7, Buffer.from(JSON.stringify(makeRecord(6, { 'http.response.status_code': 404 }))));
    const leaves = Array.from({ length: batch.count }, (_, i) => leafHash(records.get(batch.first_seq + i)!));
    batches.putSync(batch.batch, { ...batch, root: merkleRoot(leaves).toString('hex') });
  });
  const report = await verifyDir(dir);
  t.is(report.failure?.batch, batch.batch);
  t.regex(report.failure!.problem, /chain link broken/);
});

test('a record deleted: named as missing from its batch', async (t) => {
  const dir = await copyOf(t);
  await tamper(dir, ({ records }) => records.removeSync(7));
  const report = await verifyDir(dir);
  t.is(report.failure?.seq, 7);
  t.regex(report.failure!.problem, /record 7 is missing: batch \d+ covers seqs \d+-\d+/);
});

test('a record inserted, later ones shifted up: the batch it lands in fails its root', async (t) => {
  const dir = await copyOf(t);
  const batch = batchOf(await readBatches(dir), 7);
  await tamper(dir, ({ records }) => {
    for (let seq = 40; seq >= 7; seq--) records.putSync(seq + 1, records.get(seq)!);
    records.putSync(7, Buffer.from(JSON.stringify(makeRecord(999))));
  });
  const report = await verifyDir(dir);
  t.is(report.failure?.batch, batch.batch);
  t.regex(report.failure!.problem, /Merkle root/);
});

test('a record appended after the last batch: named as covered by no batch', async (t) => {
  const dir = await copyOf(t);
  await tamper(dir, ({ records }) => records.putSync(41, Buffer.from(JSON.stringify(makeRecord(41)))));
  const report = await verifyDir(dir);
  t.is(report.failure?.seq, 41);
  t.regex(report.failure!.problem, /record 41 is not covered by any batch/);
});

test('two records swapped, within a batch and across batches: the first batch touched fails', async (t) => {
  for (const [a, b] of [[5, 6], [4, 9]]) {
    const dir = await copyOf(t);
    const batch = batchOf(await readBatches(dir), a);
    await tamper(dir, ({ records }) => {
      const [ra, rb] = [records.get(a)!, records.get(b)!];
      records.putSync(a, rb);
      records.putSync(b, ra);
    });
    const report = await verifyDir(dir);
    t.is(report.failure?.batch, batch.batch, `swap ${a} and ${b}`);
    t.regex(report.failure!.problem, /Merkle root/);
  }
});

/** Removes the links after `keep` and their records and (a careful cut) rewrites the head entry to match. */
function cutAfter(keep: BatchHeader, rewriteHead = true): (stores: JournalStores) => void {
  return ({ records, batches, meta }) => {
    for (const { key: batch, value } of batches.getRange({ start: keep.batch + 1 })) {
      for (let seq = value.first_seq; seq < value.first_seq + value.count; seq++) records.removeSync(seq);
      batches.removeSync(batch);
    }
    if (rewriteHead) meta.putSync(HEAD_KEY, { last_seq: keep.first_seq + keep.count - 1, last_batch: keep.batch, head: keep.head, epoch: keep.epoch });
  };
}

test('the last batches cut off cleanly: found against a head seen earlier, not without one', async (t) => {
  const dir = await copyOf(t);
  const before = await verifyDir(dir);
  const headers = await readBatches(dir);
  const signed = headers.filter((h) => h.sig !== undefined);
  // Cut back to the second-to-last signed head: the rest of the journal still verifies on its own.
  const keep = signed[signed.length - 2];
  await tamper(dir, cutAfter(keep));
  const alone = await verifyDir(dir);
  t.true(alone.ok, 'a clean cut at a signed head is invisible without an anchor from outside');
  t.is(alone.last_batch, keep.batch);
  const anchored = await verifyDir(dir, { expectHead: before.head });
  t.false(anchored.ok);
  t.regex(anchored.failure!.problem, new RegExp(`expected head ${before.head} is not in this chain, which ends at batch ${keep.batch}`));
  // An earlier head is still found: the anchor only proves what existed when it was taken.
  t.true((await verifyDir(dir, { expectHead: keep.head })).ok);
});

test('a cut that keeps the old head entry, or ends at an unsigned link, is found without an anchor', async (t) => {
  const headers = await readBatches(template);
  // A cut in the middle of a commit ends at a link that was not its commit's last, so unsigned.
  // Whether the template has such a link depends on how batches grouped; make one either way.
  const victim = headers.filter((h) => h.kind === 'records').at(-2)!;
  const dir = await copyOf(t);
  await tamper(dir, (stores) => {
    cutAfter(victim)(stores);
    stores.batches.putSync(victim.batch, { ...victim, sig: undefined, key: undefined });
  });
  const lastSigned = headers.filter((h) => h.sig !== undefined && h.batch < victim.batch).at(-1)!;
  const report = await verifyDir(dir);
  t.is(report.failure?.problem, `batches ${lastSigned.batch + 1}-${victim.batch} come after the last signed head: not covered by any signature`);

  // Cut at a signed head, the head entry left as it was.
  const keep = headers.filter((h) => h.sig !== undefined).at(-2)!;
  const lazy = await copyOf(t);
  await tamper(lazy, cutAfter(keep, false));
  const lazyReport = await verifyDir(lazy);
  t.regex(lazyReport.failure!.problem, new RegExp(`head entry \\(batch ${headers.at(-1)!.batch}, seq 40, .*\\) does not match its last batch \\(batch ${keep.batch},`));
});

test('a later checkpoint from the log finds a cut tail', async (t) => {
  const journalDir = join(await tempDir(t), 'journal');
  const lines: Record<string, unknown>[] = [];
  const pipeline = await createAuditPipeline({ journalDir, signingKey: key, checkpointIntervalMs: 40, log: (line) => lines.push(line) });
  t.teardown(() => pipeline.close());
  await Promise.all(Array.from({ length: 5 }, (_, i) => pipeline.recordDurable(makeRecord(i))));
  const announced = (): Record<string, unknown>[] => lines.filter((l) => l.msg === 'journal checkpoint' && l.seq === 5);
  while (announced().length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
  await pipeline.close();
  const checkpoint = announced().at(-1)!;
  const headers = await readBatches(journalDir);
  await tamper(journalDir, cutAfter(headers.find((h) => h.sig !== undefined)!));
  const report = await verifyDir(journalDir, { expectHead: checkpoint.head as string });
  t.false(report.ok);
  t.regex(report.failure!.problem, /is not in this chain/);
});

test('a wrong signature is named with its batch and key', async (t) => {
  const dir = await copyOf(t);
  const victim = (await readBatches(dir)).filter((h) => h.sig !== undefined)[1];
  const flipped = (victim.sig![0] === 'a' ? 'b' : 'a') + victim.sig!.slice(1);
  await tamper(dir, ({ batches }) => batches.putSync(victim.batch, { ...victim, sig: flipped }));
  const report = await verifyDir(dir);
  t.is(report.failure?.batch, victim.batch);
  t.is(report.failure?.problem, `batch ${victim.batch}: the signature over its head does not verify with key ${key.keyId}`);
});

test("a key swapped for another key: in the key store, on the signatures, or through a full re-signing", async (t) => {
  const other = ephemeralSigningKey();
  // 1. The recorded public key replaced: it no longer hashes to its id.
  const stored = await copyOf(t);
  await tamper(stored, ({ keys }) => keys.putSync(key.keyId, { public_key: other.publicKeySpki.toString('base64') }));
  t.regex((await verifyDir(stored)).failure!.problem, new RegExp(`the public key recorded for key ${key.keyId} is not that key.*swapped`));

  // 2. Heads re-signed with another key: the epoch was opened with the first one.
  const resigned = await copyOf(t);
  await tamper(resigned, ({ batches, keys }) => {
    keys.putSync(other.keyId, { public_key: other.publicKeySpki.toString('base64') });
    for (const { value } of batches.getRange()) if (value.sig !== undefined && value.kind !== 'epoch') batches.putSync(value.batch, { ...value, key: other.keyId, sig: other.signHead(value.head) });
  });
  t.regex((await verifyDir(resigned)).failure!.problem, new RegExp(`signed by key ${other.keyId}, but its epoch 1 was opened with key ${key.keyId}`));

  // 3. The whole chain rebuilt and re-signed with another key: consistent in itself, so only an
  // anchor from outside finds it, the expected key or a head seen before.
  const rebuilt = await copyOf(t);
  const original = await verifyDir(rebuilt);
  await tamper(rebuilt, resignWith(other));
  t.true((await verifyDir(rebuilt)).ok);
  t.deepEqual((await verifyDir(rebuilt)).keys, [other.keyId]);
  t.regex((await verifyDir(rebuilt, { expectKey: key.keyId })).failure!.problem, new RegExp(`signed by key ${other.keyId}, not by the expected key ${key.keyId}`));
  t.regex((await verifyDir(rebuilt, { expectHead: original.head })).failure!.problem, /is not in this chain/);
});

/** What an attacker with write access and a key of their own can do: relink and re-sign everything. */
function resignWith(signer: SigningKey): (stores: JournalStores) => void {
  return ({ batches, keys, meta }) => {
    keys.putSync(signer.keyId, { public_key: signer.publicKeySpki.toString('base64') });
    let prev = GENESIS_HEAD;
    for (const { value } of batches.getRange()) {
      const header: BatchHeader = { ...value, ...(value.kind === 'epoch' ? { root: epochRoot(signer.publicKeySpki) } : {}) };
      header.head = prev = linkHead(prev, header);
      if (value.key !== undefined) header.key = signer.keyId;
      if (value.sig !== undefined) header.sig = signer.signHead(header.head);
      batches.putSync(header.batch, header);
    }
    meta.putSync(HEAD_KEY, { ...(meta.get(HEAD_KEY) as JournalHead), head: prev });
  };
}
