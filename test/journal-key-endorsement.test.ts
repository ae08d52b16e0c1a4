import test, { type ExecutionContext } from 'ava';
import { X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createAuditPipeline } from '../proxy/audit/pipeline.js';
import { Journal } from '../proxy/journal/journal.js';
import { readBatches } from '../ledger/read-journal.js';
import { PRUNED_KEY, type PrunedMark } from '../ledger/journal-layout.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import { runCli } from './helpers/child.js';
import { makeRecord, tamper, truncateToFirstCommit, verifyDir, writeJournal } from './helpers/journal.js';
import { createTestMeshCa } from './helpers/mesh-ca.js';
import { tempDir } from './helpers/sidecar.js';

const owner = ephemeralSigningKey();
const attacker = ephemeralSigningKey();

async function journalOf(t: ExecutionContext, signingKey: SigningKey): Promise<string> {
  const journalDir = join(await tempDir(t), 'journal');
  await writeJournal({ journalDir, signingKey }, 3, 5);
  return journalDir;
}

test('a journal truncated and reopened with another key, forged records appended, fails verify at the unendorsed epoch link', async (t) => {
  const journalDir = await journalOf(t, owner);
  await truncateToFirstCommit(journalDir);
  await writeJournal({ journalDir, signingKey: attacker }, 1, 3, (i) => makeRecord(i, { 'url.path': '/forged' }));
  const epoch = (await readBatches(journalDir)).find((h) => h.kind === 'epoch' && h.key === attacker.keyId)!;
  const report = await verifyDir(journalDir);
  t.false(report.ok);
  t.is(report.failure?.code, 'key-mismatch');
  t.is(report.failure?.batch, epoch.batch);
  const cli = await runCli(['verify', journalDir]);
  t.is(cli.code, 1);
  t.is(cli.stdout.split('\n')[0], `verification FAILED at batch ${epoch.batch}: epoch link ${epoch.batch} (epoch 2) changes the key from ${owner.keyId} to ${attacker.keyId} without endorsement: not signed by ${owner.keyId} (a mesh CA certificate of the new key would endorse it: --ca-file)`);
});

test('a rotation endorsed by the previous key verifies and is reported; a forged endorsement does not', async (t) => {
  const journalDir = await journalOf(t, owner);
  const next = ephemeralSigningKey();
  await writeJournal({ journalDir, signingKey: next, previousSigningKey: owner }, 1, 3);
  const epoch = (await readBatches(journalDir)).find((h) => h.kind === 'epoch' && h.key === next.keyId)!;
  const report = await verifyDir(journalDir);
  t.true(report.ok, report.failure?.problem);
  t.deepEqual(report.key_changes, [{ batch: epoch.batch, epoch: 2, from: owner.keyId, to: next.keyId, endorsed: 'previous-key' }]);
  const cli = await runCli(['verify', journalDir]);
  t.is(cli.code, 0, cli.stdout);
  t.is(cli.stdout.split('\n')[0], `key change at epoch link ${epoch.batch} (epoch 2): ${owner.keyId} -> ${next.keyId}, endorsed by the previous key ${owner.keyId}`);

  // The attacker names the owner's key as endorser but can only sign with their own.
  await tamper(journalDir, ({ batches }) => batches.putSync(epoch.batch, { ...epoch, endorsement: attacker.sign(Buffer.from('anything')) }));
  const forged = await verifyDir(journalDir);
  t.is(forged.failure?.code, 'bad-signature');
  t.is(forged.failure?.problem, `epoch link ${epoch.batch} (epoch 2): its endorsement of key ${next.keyId} does not verify with the previous key ${owner.keyId}`);
});

test('a restart with the same key is no key change; a new key without the previous one is logged at start and fails verify', async (t) => {
  const journalDir = await journalOf(t, owner);
  await writeJournal({ journalDir, signingKey: owner }, 1, 2);
  t.deepEqual((await verifyDir(journalDir)).key_changes, []);
  const lines: Record<string, unknown>[] = [];
  await writeJournal({ journalDir, signingKey: attacker, log: (line) => lines.push(line) }, 1, 2);
  t.like(lines.find((l) => l.previous_key !== undefined), { level: 'warn', previous_key: owner.keyId, key: attacker.keyId });
  t.is((await verifyDir(journalDir)).failure?.code, 'key-mismatch');
});

async function prunedJournal(t: ExecutionContext): Promise<string> {
  const journalDir = join(await tempDir(t), 'journal');
  const pipeline = await createAuditPipeline({ journalDir, signingKey: owner, checkpointIntervalMs: 50, retentionMs: 300, maxBatchRecords: 10 });
  t.teardown(() => pipeline.close());
  await Promise.all(Array.from({ length: 30 }, (_, i) => pipeline.recordDurable(makeRecord(i))));
  const started = Date.now();
  while (pipeline.readBatches()[0].first_seq <= 30) {
    if (Date.now() - started > 10_000) throw new Error('nothing pruned in 10 s at a 300 ms retention');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await pipeline.close();
  return journalDir;
}

async function markOf(journalDir: string): Promise<PrunedMark> {
  let mark: PrunedMark | undefined;
  await tamper(journalDir, ({ meta }) => (mark = meta.get(PRUNED_KEY) as PrunedMark));
  return mark!;
}

test('the prune mark is signed by the journal key; an altered, unsigned or re-signed mark fails verify', async (t) => {
  const journalDir = await prunedJournal(t);
  const mark = await markOf(journalDir);
  t.like(mark, { key: owner.keyId, epoch_key: owner.keyId });
  t.true((await verifyDir(journalDir)).ok);

  await tamper(journalDir, ({ meta }) => meta.putSync(PRUNED_KEY, { ...mark, sealed_unix_ms: mark.sealed_unix_ms + 1 }));
  const altered = await verifyDir(journalDir);
  t.is(altered.failure?.problem, `the prune mark (batches up to ${mark.last_batch} pruned): its signature does not verify with key ${owner.keyId}: the mark was altered`);
  t.is((await runCli(['verify', journalDir])).code, 1);

  const { sig: _sig, ...unsigned } = mark;
  await tamper(journalDir, ({ meta }) => meta.putSync(PRUNED_KEY, unsigned));
  t.regex((await verifyDir(journalDir)).failure!.problem, /prune mark .* is not signed/);

  // Re-signed by another key the journal is made to hold: not a key of this chain.
  const { signPruneMark } = await import('../ledger/key-endorsement.js');
  await tamper(journalDir, ({ meta, keys }) => {
    keys.putSync(attacker.keyId, { public_key: attacker.publicKeySpki.toString('base64') });
    meta.putSync(PRUNED_KEY, signPruneMark(mark, attacker));
  });
  t.regex((await verifyDir(journalDir)).failure!.problem, new RegExp(`prune mark is signed by key ${attacker.keyId}, which is not a key of this chain`));
});

test('with --ca-file a key change is endorsed by a mesh CA certificate of the new key for the same SPIFFE ID, and only then', async (t) => {
  const ca = await createTestMeshCa();
  const dir = await tempDir(t);
  const caFile = join(dir, 'ca.crt');
  await writeFile(caFile, ca.pem);
  const spiffe = 'spiffe://cluster.local/ns/shop/sa/ledger';
  const certified = async (journalDir: string, key: SigningKey, id: string, mesh = ca): Promise<void> => {
    const journal = Journal.open(journalDir, { signer: key });
    await journal.recordCertificate(await mesh.certify(key.publicKeySpki, id));
    await journal.close();
  };
  const journalOfCertified = async (next: SigningKey, id: string, mesh = ca): Promise<string> => {
    const journalDir = await journalOf(t, owner);
    await certified(journalDir, owner, spiffe);
    await certified(journalDir, next, id, mesh);
    await writeJournal({ journalDir, signingKey: next }, 1, 2);
    return journalDir;
  };
  const bundle = [new X509Certificate(ca.pem)];

  const next = ephemeralSigningKey();
  const good = await journalOfCertified(next, spiffe);
  t.is((await verifyDir(good)).failure?.code, 'key-mismatch', 'without the CA bundle the certificate endorses nothing');
  const report = await verifyDir(good, { ca: bundle });
  t.true(report.ok, report.failure?.problem);
  t.like(report.key_changes[0], { from: owner.keyId, to: next.keyId, endorsed: 'ca', identity: spiffe });
  const cli = await runCli(['verify', good, '--ca-file', caFile]);
  t.is(cli.code, 0, cli.stdout);
  t.regex(cli.stdout, new RegExp(`: ${owner.keyId} -> ${next.keyId}, endorsed by the mesh CA, as ${spiffe}\\n`));

  const otherId = await journalOfCertified(ephemeralSigningKey(), 'spiffe://cluster.local/ns/shop/sa/intruder');
  t.regex((await verifyDir(otherId, { ca: bundle })).failure!.problem, new RegExp(`is certified as spiffe://cluster.local/ns/shop/sa/intruder, but the previous key ${owner.keyId} as ${spiffe}`));

  const otherCa = await journalOfCertified(ephemeralSigningKey(), spiffe, await createTestMeshCa('another CA'));
  t.regex((await verifyDir(otherCa, { ca: bundle })).failure!.problem, /is not endorsed: its certificate is not issued by the mesh CA/);
});
