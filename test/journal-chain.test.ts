import test from 'ava';
import { retentionClock } from '../proxy/journal/retention.js';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createAuditPipeline } from '../proxy/audit/pipeline.js';
import { parseSidecarConfig } from '../proxy/config.js';
import { EMPTY_ROOT, epochRoot, keyIdOf, linkHead, type LinkFields } from '../ledger/chain.js';
import { Journal } from '../proxy/journal/journal.js';
import { readBatches, withSnapshot } from '../ledger/read-journal.js';
import { loadOrCreateSigningKey } from '../ledger/keys.js';
import { makeRecord, verifyDir, writeJournal } from './helpers/journal.js';
import { tempDir } from './helpers/sidecar.js';

const LINK: LinkFields = { batch: 7, first_seq: 2 ** 40 + 5, count: 256, root: '22'.repeat(32), sealed_unix_ms: 1_700_000_000_123, epoch: 3, kind: 'records' };

test('a link hashes exactly the documented bytes, and every field changes the head', (t) => {
  const prev = '11'.repeat(32);
  const u64 = (n: number): Buffer => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(n));
    return b;
  };
  const u32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const expected = createHash('sha256')
    .update(Buffer.concat([Buffer.from([2]), Buffer.from(prev, 'hex'), Buffer.from(LINK.root, 'hex'), u64(LINK.first_seq), u32(256), u64(LINK.sealed_unix_ms), u64(7), u32(3), Buffer.from([0])]))
    .digest('hex');
  t.is(linkHead(prev, LINK), expected);
  const variants: Partial<LinkFields>[] = [{ batch: 8 }, { first_seq: LINK.first_seq + 1 }, { count: 255 }, { root: '23'.repeat(32) }, { sealed_unix_ms: LINK.sealed_unix_ms + 1 }, { epoch: 4 }, { kind: 'checkpoint' }];
  for (const v of variants) t.not(linkHead(prev, { ...LINK, ...v }), expected, JSON.stringify(v));
  t.not(linkHead('12'.repeat(32), LINK), expected);
  t.throws(() => linkHead(prev, { ...LINK, count: 1.5 }), { instanceOf: TypeError });
  t.throws(() => linkHead(prev, { ...LINK, root: 'AB'.repeat(32) }), { instanceOf: TypeError });
});

test('the signing key is created once, owner-only, apart from the journal, and loads back with the same id', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'keys', 'sidecar.key');
  // Two starts racing on a fresh machine end up with one key.
  const [a, b] = await Promise.all([loadOrCreateSigningKey(path), loadOrCreateSigningKey(path)]);
  t.is(a.keyId, b.keyId);
  t.is((await stat(path)).mode & 0o777, 0o600);
  t.is((await stat(join(dir, 'keys'))).mode & 0o777, 0o700);
  t.false(a.looseMode);
  const again = await loadOrCreateSigningKey(path);
  t.is(again.keyId, a.keyId);
  t.is(again.keyId, keyIdOf(again.publicKeySpki));
  t.regex(again.keyId, /^[0-9a-f]{16}$/);

  const rsa = join(dir, 'rsa.key');
  await writeFile(rsa, generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  await t.throwsAsync(loadOrCreateSigningKey(rsa), { message: /holds a rsa key, not Ed25519/ });
  const garbage = join(dir, 'garbage.key');
  await writeFile(garbage, 'not a key', { mode: 0o644 });
  await t.throwsAsync(loadOrCreateSigningKey(garbage), { message: /is not a PEM private key/ });
  const loose = join(dir, 'loose.key');
  await writeFile(loose, generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o644 });
  t.true((await loadOrCreateSigningKey(loose)).looseMode, 'the sidecar warns about it');

  t.throws(() => parseSidecarConfig(['--journal', join(dir, 'j'), '--key', join(dir, 'j', 'sidecar.key')], {}), { message: /--key: .* is inside the journal folder/ });
  t.notThrows(() => parseSidecarConfig(['--journal', join(dir, 'j'), '--key', join(dir, 'j-key')], {}));
});

test('each start opens a boot epoch chained to the last head, its link committing to the recorded public key', async (t) => {
  const dir = await tempDir(t);
  const journalDir = join(dir, 'journal');
  const signingKey = await loadOrCreateSigningKey(join(dir, 'sidecar.key'));
  await writeJournal({ journalDir, signingKey }, 1, 5);
  await writeJournal({ journalDir, signingKey }, 1, 5);
  const epochs = (await readBatches(journalDir)).filter((h) => h.kind === 'epoch');
  t.deepEqual(epochs.map((h) => [h.epoch, h.first_seq, h.key]), [[1, 1, signingKey.keyId], [2, 6, signingKey.keyId]]);
  t.true(epochs.every((h) => h.root === epochRoot(signingKey.publicKeySpki) && h.sig !== undefined));
  const stored = await withSnapshot(journalDir, ({ stores, transaction }) => stores.keys.get(signingKey.keyId, { transaction }));
  t.is(stored?.public_key, signingKey.publicKeySpki.toString('base64'));
  t.like(await verifyDir(journalDir), { ok: true, records: 10, epochs: 2, keys: [signingKey.keyId] });
});

test('signed checkpoints keep coming with no traffic, and stop at close', async (t) => {
  const journalDir = join(await tempDir(t), 'journal');
  const lines: Record<string, unknown>[] = [];
  const pipeline = await createAuditPipeline({ journalDir, checkpointIntervalMs: 100, log: (line) => lines.push(line) });
  t.teardown(() => pipeline.close());
  await pipeline.recordDurable(makeRecord(1));
  const started = Date.now();
  while (pipeline.readBatches().filter((h) => h.kind === 'checkpoint').length < 3) {
    if (Date.now() - started > 10_000) return t.fail('fewer than 3 checkpoints in 10 s at a 100 ms interval');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await pipeline.close();
  const links = await readBatches(journalDir);
  const checkpoints = links.filter((h) => h.kind === 'checkpoint');
  t.true(checkpoints.length >= 3);
  t.true(checkpoints.every((h) => h.count === 0 && h.root === EMPTY_ROOT && h.sig !== undefined));
  const announced = lines.filter((l) => l.msg === 'journal checkpoint').length;
  t.true(announced >= 3);

  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is((await readBatches(journalDir)).length, links.length, 'no link after close');
  t.is(lines.filter((l) => l.msg === 'journal checkpoint').length, announced, 'no tick after close');
  t.true((await verifyDir(journalDir)).ok);
});

test('a maintenance tick while the epoch link is still committing queues no checkpoint behind it', async (t) => {
  // On a loaded machine the first tick can come before the epoch commit lands; a checkpoint then
  // would be a link of its own between the epoch and the first records, for no reason.
  const journalDir = join(await tempDir(t), 'journal');
  const journal = Journal.open(journalDir);
  journal.maintain();
  await journal.close();
  t.deepEqual((await readBatches(journalDir)).map((h) => h.kind), ['epoch']);
});

test('retention prunes whole old links; what remains verifies from the oldest retained batch', async (t) => {
  const journalDir = join(await tempDir(t), 'journal');
  const pipeline = await createAuditPipeline({ journalDir, checkpointIntervalMs: 50, retentionMs: 300, maxBatchRecords: 10 });
  t.teardown(() => pipeline.close());
  await Promise.all(Array.from({ length: 50 }, (_, i) => pipeline.recordDurable(makeRecord(i))));
  const started = Date.now();
  while (pipeline.readBatches()[0].first_seq <= 50) {
    if (Date.now() - started > 10_000) return t.fail('nothing pruned in 10 s at a 300 ms retention');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await Promise.all(Array.from({ length: 5 }, (_, i) => pipeline.recordDurable(makeRecord(100 + i))));
  await pipeline.close();
  const report = await verifyDir(journalDir);
  t.true(report.ok, report.failure?.problem);
  t.true(report.pruned_through!.seq >= 50, `pruned through seq ${report.pruned_through?.seq}`);
  t.is(report.first_seq, report.pruned_through!.seq + 1);
  t.is(report.last_seq, 55);
  const first = (await readBatches(journalDir))[0];
  t.is(first.batch, report.pruned_through!.batch + 1);
});

test('retention ages links by the wall clock, but a step forward counts only the time that really passed; slewing and steps back are taken as they come', (t) => {
  let wall = 1_000_000_000_000;
  let mono = 0;
  const clock = retentionClock(() => wall, () => mono);
  const advance = (ms: number, wallExtra = 0): { nowUnixMs: number; aheadMs: number } => {
    mono += ms;
    wall += ms + wallExtra;
    return clock.read();
  };
  // NTP slewing: the wall clock runs 500 ppm fast for a week of one-second readings, 5 minutes in all.
  let reading = { nowUnixMs: 0, aheadMs: 0 };
  for (let i = 0; i < 7 * 86_400; i++) reading = advance(1_000, 0.5);
  t.deepEqual(reading, { nowUnixMs: wall, aheadMs: 0 });
  // A step a day forward: the time to age by moves on by what elapsed, and the step is reported.
  const before = wall;
  reading = advance(1_000, 86_400_000);
  t.deepEqual(reading, { nowUnixMs: before + 1_000, aheadMs: 86_400_000 });
  reading = advance(10_000);
  t.deepEqual(reading, { nowUnixMs: before + 11_000, aheadMs: 86_400_000 });
  // Stepped back into line: the wall clock again.
  wall -= 86_400_000;
  reading = advance(1_000);
  t.deepEqual(reading, { nowUnixMs: wall, aheadMs: 0 });
  // A step back is taken at once (it only delays pruning).
  wall -= 3_600_000;
  t.deepEqual(advance(1_000), { nowUnixMs: wall, aheadMs: 0 });
});
