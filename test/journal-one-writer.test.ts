import test from 'ava';
import { join } from 'node:path';
import { CLI, startProcess } from './helpers/child.js';
import { request, startUpstream } from './helpers/net.js';
import { verifyDir } from './helpers/journal.js';
import { tempDir } from './helpers/sidecar.js';
import { startSidecarProcess } from './helpers/sidecar-process.js';
import { Journal } from '../proxy/journal/journal.js';
import { readJournal } from '../ledger/read-journal.js';

// One writer per journal (issue 22, item 9): two sidecar processes on one journal folder used to
// both write, and the chain stopped verifying. The journal takes an exclusive flock for its whole
// life; the kernel drops it when its holder dies, so kill -9 never leaves a stale lock.

/** Runs `auditmesh sidecar` on `dir`'s journal and key, expecting it to refuse; resolves with its exit. */
async function secondSidecar(t: Parameters<typeof startProcess>[0], dir: string, appPort: number) {
  const args = ['sidecar', '--app-port', String(appPort), '--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0', '--journal', join(dir, 'journal'), '--key', join(dir, 'sidecar.key'), '--redaction-key', join(dir, 'redaction.key')];
  return startProcess(t, process.execPath, [...CLI, ...args]).done;
}

test('a second sidecar process on a journal in use refuses to start with one line naming the holder; after kill -9 of the holder the next one starts', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const dir = await tempDir(t);
  const first = await startSidecarProcess(t, { appPort: app.port, dir });
  t.is((await request(first.ports.inbound, { path: '/one', headers: { 'x-request-id': 'first-1' } })).status, 200);

  const refused = await secondSidecar(t, dir, app.port);
  t.is(refused.code, 1);
  const lines = refused.stderr.split('\n').filter((l) => l !== '');
  t.is(lines.length, 1, refused.stderr);
  t.regex(lines[0], new RegExp(`^auditmesh sidecar: cannot start: journal .*journal is in use by process ${first.pid} \\(it holds .*auditmesh\\.lock\\): one writer per journal`));
  t.is(first.running.child.exitCode, null, 'the first sidecar is untouched');
  t.is((await request(first.ports.inbound, { path: '/two', headers: { 'x-request-id': 'first-2' } })).status, 200);

  // kill -9: no chance to clean up, yet the kernel released the lock with the process.
  first.running.child.kill('SIGKILL');
  await first.running.done;
  const next = await startSidecarProcess(t, { appPort: app.port, dir });
  t.is((await request(next.ports.inbound, { path: '/three', headers: { 'x-request-id': 'next-1' } })).status, 200);
  await next.stop();

  const report = await verifyDir(join(dir, 'journal'));
  t.true(report.ok, report.failure?.problem);
  const ids = new Set((await readJournal(join(dir, 'journal'))).map((r) => r['audit.request_id']));
  t.true(ids.has('next-1'));
});

test('a journal open in another process cannot be opened for writing here; once that process exits it can', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const dir = await tempDir(t);
  const other = await startSidecarProcess(t, { appPort: app.port, dir });
  const error = t.throws(() => Journal.open(join(dir, 'journal')));
  t.like(error, { code: 'AUDITMESH_JOURNAL_LOCKED' });
  t.regex(error!.message, new RegExp(`in use by process ${other.pid}`));
  await other.stop();
  const journal = Journal.open(join(dir, 'journal'));
  t.teardown(() => journal.close());
  t.true(journal.writable);
});
