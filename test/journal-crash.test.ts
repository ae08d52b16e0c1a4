import test from 'ava';
import http from 'node:http';
import { join } from 'node:path';
import { readBatches, readJournal } from '../ledger/read-journal.js';
import { runCli, startCli } from './helpers/child.js';
import { verifyDir } from './helpers/journal.js';
import { request, startUpstream } from './helpers/net.js';
import { tempDir } from './helpers/sidecar.js';

// Crash consistency, not power-loss durability: kill -9 keeps the page cache, so this proves that
// whatever LMDB had committed survives the process and the chain goes on from it
// (REFERENCES.md). Strict mode is the one that promises something per request: the upstream
// sees a request only once its request record is in the journal.
const KILLS = 10;
const CONCURRENCY = 12;

test.serial('kill -9 under load, again and again: the chain verifies after each, the sequence goes on, and every request the upstream saw has its request record', async (t) => {
  // Ten sidecar starts from source (~3 s each under tsx) make this the suite's longest test.
  t.timeout(120_000);
  const started = performance.now();
  const app = await startUpstream();
  t.teardown(app.close);
  const dir = await tempDir(t);
  const journalDir = join(dir, 'journal');
  const args = ['sidecar', '--app-port', String(app.port), '--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0', '--journal', journalDir, '--key', join(dir, 'sidecar.key'), '--redaction-key', join(dir, 'redaction.key'), '--audit-mode', 'strict', '--checkpoint-interval-ms', '200'];
  let lastSeq = 0;
  let sent = 0;
  for (let kill = 1; kill <= KILLS; kill++) {
    const sidecar = startCli(t, args);
    const inbound = Number((await sidecar.waitFor(/"msg":"sidecar listening".*"inbound":(\d+)/, 45_000))[1]);
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    let running = true;
    const seenBefore = app.seen.length;
    const load = Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (running) await request(inbound, { path: '/pay', headers: { 'x-request-id': `k${kill}-${sent++}` }, agent }).catch(() => {});
      }),
    );
    // Kill mid-stream, once this boot has put some requests through.
    while (app.seen.length < seenBefore + 20 + Math.floor(Math.random() * 200)) await new Promise((resolve) => setTimeout(resolve, 5));
    sidecar.child.kill('SIGKILL');
    const exit = await sidecar.done;
    running = false;
    await load;
    agent.destroy();
    t.is(exit.code, null, 'killed, not exited');

    const report = await verifyDir(journalDir);
    t.true(report.ok, `after kill ${kill}: ${report.failure?.problem}`);
    t.is(report.epochs, kill);
    const epoch = (await readBatches(journalDir)).filter((h) => h.kind === 'epoch').at(-1)!;
    t.is(epoch.first_seq, lastSeq + 1, `boot ${kill} continues the sequence after the last head it found`);
    t.true(report.last_seq > lastSeq, `boot ${kill} recorded something`);
    lastSeq = report.last_seq;
  }

  const requestRecords = new Set((await readJournal(journalDir)).filter((r) => r['audit.phase'] === 'request').map((r) => r['audit.request_id']));
  const missing = app.seen.filter((s) => !requestRecords.has(s.headers['x-request-id'] as string));
  t.deepEqual(missing.map((s) => s.headers['x-request-id']), [], 'every request the upstream saw has its request record');
  const cli = await runCli(['verify', journalDir]);
  t.is(cli.code, 0, cli.stdout + cli.stderr);
  t.regex(cli.stdout, new RegExp(`head [0-9a-f]{64} \\(seq ${lastSeq}\\), signed by [0-9a-f]{16}; ${KILLS} boot epochs`));
  t.log(`${KILLS} kills in ${((performance.now() - started) / 1000).toFixed(1)} s: ${app.seen.length} requests reached the upstream, ${lastSeq} records, all verified`);
});
