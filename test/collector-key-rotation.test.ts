import test, { type ExecutionContext } from 'ava';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from './helpers/child.js';
import { startTestCollector, type TestCollector } from './helpers/collector.js';
import { request, startUpstream } from './helpers/net.js';
import { startSidecarProcess } from './helpers/sidecar-process.js';
import { tempDir, until } from './helpers/sidecar.js';
import { readBatches } from '../ledger/read-journal.js';

const ID = 'shop/ledger-0';

/** A real sidecar process shipping to `collector`, `requests` exchanges through it, stopped once the collector holds them all. */
async function shipRound(t: ExecutionContext, collector: TestCollector, dir: string, requests: number): Promise<string> {
  const tokenFile = join(dir, 'collector-token');
  await writeFile(tokenFile, collector.token!, { mode: 0o600 });
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const sidecar = await startSidecarProcess(t, { appPort: upstream.port, dir, args: ['--collector', collector.grpcAddress, '--collector-token-file', tokenFile, '--sidecar-id', ID, '--checkpoint-interval-ms', '200'] });
  for (let i = 0; i < requests; i++) t.is((await request(sidecar.ports.inbound, { path: `/r/${i}` })).status, 200);
  const head = async (): Promise<number> => (await readBatches(sidecar.journalDir)).at(-1)?.batch ?? 0;
  await until(async () => {
    const target = await head();
    const s = collector.sidecars().find((x) => x.id === ID);
    return target > 0 && s !== undefined && (s.last_batch >= target || s.last_refusal !== null);
  }, 'the collector holding the sidecar\'s chain as far as its journal', 60_000).catch((err: Error) => {
    throw new Error(`${err.message}: ${JSON.stringify(collector.sidecars())}\n${JSON.stringify(sidecar.running.output()).slice(0, 3000)}`);
  });
  await sidecar.stop();
  const { stdout, stderr } = sidecar.running.output();
  return stdout + stderr;
}

test('a key rotated with KEY.previous inside one journal is endorsed: the collector takes the new key, and the journal and the store both verify', async (t) => {
  const collector = await startTestCollector(t);
  const dir = await tempDir(t);
  await shipRound(t, collector, dir, 3);
  const first = collector.sidecars().find((x) => x.id === ID)!;
  await rename(join(dir, 'sidecar.key'), join(dir, 'sidecar.key.previous'));
  const log = await shipRound(t, collector, dir, 3);
  t.regex(log, /"msg":"key rotated: the previous key endorsed the new one and its file was removed"/);
  const now = collector.sidecars().find((x) => x.id === ID)!;
  t.is(now.last_refusal, null);
  t.not(now.key_id, first.key_id);
  t.true(now.verified);
  const journal = await runCli(['verify', join(dir, 'journal')]);
  t.is(journal.code, 0, journal.stdout);
  t.regex(journal.stdout, new RegExp(`: ${first.key_id} -> ${now.key_id}, endorsed by the previous key ${first.key_id}\\n`));
  await collector.close();
  const store = await runCli(['verify', collector.storeDir]);
  t.is(store.code, 0, store.stdout);
  t.regex(store.stdout, new RegExp(`^ok +${ID} +key ${now.key_id}`, 'm'));
  t.regex(store.stdout, new RegExp(`^ +${ID}: key change at epoch link \\d+ \\(epoch 2\\): ${first.key_id} -> ${now.key_id}, endorsed by the previous key ${first.key_id}$`, 'm'), 'the store lists the key change and what endorsed it');
});

test('a key swapped without endorsement inside one journal is refused by the collector (key-mismatch) and fails verify', async (t) => {
  const collector = await startTestCollector(t);
  const dir = await tempDir(t);
  await shipRound(t, collector, dir, 2);
  const first = collector.sidecars().find((x) => x.id === ID)!;
  await rm(join(dir, 'sidecar.key'));
  await shipRound(t, collector, dir, 2);
  const now = collector.sidecars().find((x) => x.id === ID)!;
  t.is(now.key_id, first.key_id, 'the pin stays');
  t.is(now.last_refusal?.code, 'key-mismatch');
  t.regex(now.last_refusal!.reason, /changes the key from .* without endorsement/);
  t.is((await runCli(['verify', join(dir, 'journal')])).code, 1);
});
