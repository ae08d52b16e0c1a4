import test, { type ExecutionContext } from 'ava';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Journal } from '../proxy/journal/journal.js';
import { readBatches } from '../ledger/read-journal.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import { runCli } from './helpers/child.js';
import { startTestCollector, type TestCollector } from './helpers/collector.js';
import { truncateToFirstCommit, writeJournal } from './helpers/journal.js';
import { createTestMeshCa } from './helpers/mesh-ca.js';
import { request, startUpstream } from './helpers/net.js';
import { startSidecarProcess, type SidecarProcess } from './helpers/sidecar-process.js';
import { tempDir, until } from './helpers/sidecar.js';

// `auditmesh verify` on key changes, through the real CLI: the attack on a journal
// written by a real sidecar, and a journal whose every key change is reported with what
// endorsed it.

const ID = 'shop/ledger-0';

/** `auditmesh sidecar` on `dir`, shipping to `collector`, serving `paths` (each answered 200), then stopped. */
async function serve(t: ExecutionContext, collector: TestCollector, dir: string, paths: string[]): Promise<SidecarProcess> {
  await writeFile(join(dir, 'collector-token'), collector.token!, { mode: 0o600 });
  const app = await startUpstream();
  t.teardown(() => app.close());
  const sidecar = await startSidecarProcess(t, { appPort: app.port, dir, args: ['--collector', collector.grpcAddress, '--collector-token-file', join(dir, 'collector-token'), '--sidecar-id', ID, '--checkpoint-interval-ms', '200'] });
  for (const path of paths) t.is((await request(sidecar.ports.inbound, { path })).status, 200);
  return sidecar;
}

test("the issue's attack on a real sidecar's journal: truncated, reopened by a sidecar with the attacker's key, forged requests served; verify fails at the new epoch link (with --ca-file too), and the collector refuses it and keeps the true chain", async (t) => {
  const collector = await startTestCollector(t);
  const dir = await tempDir(t);
  const honest = await serve(t, collector, dir, ['/pay/1', '/pay/2', '/pay/3', '/pay/4']);
  const last = async (): Promise<number> => (await readBatches(honest.journalDir)).at(-1)!.batch;
  await until(async () => (collector.sidecars().find((s) => s.id === ID)?.last_batch ?? 0) >= (await last()), 'the collector holding the honest chain', 60_000);
  await honest.stop();
  const owner = collector.sidecars().find((s) => s.id === ID)!;
  const kept = await truncateToFirstCommit(honest.journalDir);
  await rm(join(dir, 'sidecar.key'));

  const attacker = await serve(t, collector, dir, ['/forged/1', '/forged/2', '/forged/3']);
  const { stdout, stderr } = attacker.running.output();
  t.regex(stdout + stderr, /"msg":"journal key changed without the previous key to endorse it/);
  await until(async () => collector.sidecars().find((s) => s.id === ID)?.last_refusal != null, 'the collector refusing the attacker', 60_000);
  await attacker.stop();

  const links = await readBatches(attacker.journalDir);
  const epoch = links.find((h) => h.kind === 'epoch' && h.batch > kept.batch)!;
  t.true(links.some((h) => h.kind === 'records' && h.batch > epoch.batch), 'forged records were appended after the new epoch');
  const newKey = epoch.key!;
  t.not(newKey, owner.key_id);
  const unendorsed = `verification FAILED at batch ${epoch.batch}: epoch link ${epoch.batch} (epoch ${epoch.epoch}) changes the key from ${owner.key_id} to ${newKey} without endorsement: not signed by ${owner.key_id}`;
  const bare = await runCli(['verify', attacker.journalDir]);
  t.is(bare.code, 1);
  t.true(bare.stdout.startsWith(unendorsed), bare.stdout);
  const caFile = join(dir, 'ca.crt');
  await writeFile(caFile, (await createTestMeshCa()).pem);
  const withCa = await runCli(['verify', attacker.journalDir, '--ca-file', caFile]);
  t.is(withCa.code, 1, 'a mesh CA bundle endorses nothing the CA did not certify');
  t.true(withCa.stdout.startsWith(unendorsed), withCa.stdout);

  const status = collector.sidecars().find((s) => s.id === ID)!;
  t.is(status.key_id, owner.key_id, 'the pin stays with the honest key');
  // What breaks first depends on how far each journal got (a resent batch that differs, numbers that do not follow on): either way it names the key.
  t.true(['key-mismatch', 'gap', 'bad-chain'].includes(status.last_refusal!.code), status.last_refusal!.code);
  t.regex(status.last_refusal!.reason, new RegExp(`this stream presents key ${newKey}`));
  t.is(status.last_batch, owner.last_batch, 'nothing of the attacker stored');
  await collector.close();
  const store = await runCli(['verify', collector.storeDir]);
  t.is(store.code, 0, store.stdout);
  t.regex(store.stdout, new RegExp(`^ok +${ID} +key ${owner.key_id} +4 records`, 'm'), 'the collector\'s copy still proves the honest records');
});

test('verify reports every key change in chain order with what endorsed it, the previous key and then the mesh CA; without --ca-file the certified one fails', async (t) => {
  const ca = await createTestMeshCa();
  const dir = await tempDir(t);
  const caFile = join(dir, 'ca.crt');
  await writeFile(caFile, ca.pem);
  const spiffe = 'spiffe://cluster.local/ns/shop/sa/ledger';
  const journalDir = join(dir, 'journal');
  const [first, second, third] = [ephemeralSigningKey(), ephemeralSigningKey(), ephemeralSigningKey()];
  const certify = async (key: SigningKey): Promise<void> => {
    const journal = Journal.open(journalDir, { signer: key });
    await journal.recordCertificate(await ca.certify(key.publicKeySpki, spiffe));
    await journal.close();
  };
  await writeJournal({ journalDir, signingKey: first }, 1, 3);
  await writeJournal({ journalDir, signingKey: second, previousSigningKey: first }, 1, 3);
  await certify(second);
  await certify(third);
  await writeJournal({ journalDir, signingKey: third }, 1, 3);
  // Each open is a boot epoch; the changes are at the first epoch of the second and third key.
  const links = await readBatches(journalDir);
  const epochs = [first, second, third].map((k) => links.find((h) => h.kind === 'epoch' && h.key === k.keyId)!);

  const cli = await runCli(['verify', journalDir, '--ca-file', caFile]);
  t.is(cli.code, 0, cli.stdout);
  t.deepEqual(cli.stdout.split('\n').slice(0, 2), [
    `key change at epoch link ${epochs[1].batch} (epoch ${epochs[1].epoch}): ${first.keyId} -> ${second.keyId}, endorsed by the previous key ${first.keyId}`,
    `key change at epoch link ${epochs[2].batch} (epoch ${epochs[2].epoch}): ${second.keyId} -> ${third.keyId}, endorsed by the mesh CA, as ${spiffe}`,
  ]);
  t.regex(cli.stdout, /^9 records in \d+ batches verified, .*signed by .*; 5 boot epochs/m);
  const json = JSON.parse((await runCli(['verify', journalDir, '--ca-file', caFile, '-o', 'json'])).stdout);
  t.deepEqual(json.key_changes.map((c: { endorsed: string }) => c.endorsed), ['previous-key', 'ca']);

  const bare = await runCli(['verify', journalDir]);
  t.is(bare.code, 1);
  t.regex(bare.stdout, new RegExp(`^verification FAILED at batch ${epochs[2].batch}: epoch link ${epochs[2].batch} \\(epoch ${epochs[2].epoch}\\) changes the key from ${second.keyId} to ${third.keyId} without endorsement`));
});
