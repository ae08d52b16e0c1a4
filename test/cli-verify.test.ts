import test from 'ava';
import http from 'node:http';
import { join } from 'node:path';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { runCli } from './helpers/child.js';
import { tamper, verifyDir, writeJournal } from './helpers/journal.js';
import { request, startUpstream } from './helpers/net.js';
import { startTestSidecar, tempDir } from './helpers/sidecar.js';

const key = ephemeralSigningKey();

test('auditmesh verify: exit 0 and a summary line; the anchors from outside pass when they hold', async (t) => {
  const journalDir = join(await tempDir(t), 'journal');
  await writeJournal({ journalDir, signingKey: key, maxBatchRecords: 8 }, 3, 10);
  const { head } = await verifyDir(journalDir);
  const r = await runCli(['verify', journalDir, '--expect-head', head, '--expect-key', key.keyId]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`^30 records in \\d+ batches verified, head ${head} \\(seq 30\\), signed by ${key.keyId}; 1 boot epochs, \\d+ checkpoints\\n$`));
});

test('auditmesh verify warns when its LMDB lacks the fix of ITS#9496 (lmdb-js made to load its prebuilt binary), and is quiet otherwise', async (t) => {
  const journalDir = join(await tempDir(t), 'journal');
  await writeJournal({ journalDir, signingKey: key }, 1, 3);
  const patched = await runCli(['verify', journalDir]);
  t.is(patched.code, 0);
  t.is(patched.stderr, '');
  const prebuilt = await runCli(['verify', journalDir], { env: { PREBUILDS_ONLY: '1' } });
  t.is(prebuilt.code, 0, 'the verdict itself does not change');
  t.regex(prebuilt.stderr, /^auditmesh verify: warning: PREBUILDS_ONLY is set: .*ITS#9496.*its writer lose commits it has acknowledged\n$/);
});

test('auditmesh verify: exit 1 naming the first record that fails; -o json says the same', async (t) => {
  const journalDir = join(await tempDir(t), 'journal');
  await writeJournal({ journalDir, signingKey: key, maxBatchRecords: 8 }, 3, 10);
  await tamper(journalDir, ({ records }) => records.removeSync(12));
  const table = await runCli(['verify', journalDir]);
  t.is(table.code, 1);
  // Rounds of 10 records in batches of at most 8: seqs 1-8, 9-10, 11-18, ...
  t.regex(table.stdout, /^verification FAILED at record 12: record 12 is missing: batch \d+ covers seqs 11-18\n/);
  const json = await runCli(['verify', journalDir, '-o', 'json']);
  t.is(json.code, 1);
  const report = JSON.parse(json.stdout);
  t.false(report.ok);
  t.is(report.failure.seq, 12);
  t.is(report.records, 10, 'what verified before the failure');
});

test('auditmesh verify --record prints the record, its inclusion path and the head it proves against', async (t) => {
  const journalDir = join(await tempDir(t), 'journal');
  await writeJournal({ journalDir, signingKey: key, maxBatchRecords: 8 }, 3, 10);
  const r = await runCli(['verify', journalDir, '--record', '13']);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  t.regex(lines[0], /^record 13: leaf 2 of 8 in batch \d+$/);
  t.is(JSON.parse(lines[1])['url.path'], '/items/12');
  t.is(lines.filter((l) => /^path \d+ +[0-9a-f]{64}$/.test(l)).length, 3, 'a tree of 8 has a path of 3');
  t.regex(r.stdout, /\nhead {8}[0-9a-f]{64} \(batch \d+, seq 30\): batch \d+'s head chains to it\n/);
  t.regex(r.stdout, /record 13 is included, proved against that head\n$/);

  const json = JSON.parse((await runCli(['verify', journalDir, '--record', '13', '-o', 'json'])).stdout);
  t.like(json.inclusion, { seq: 13, index: 2, tree_size: 8 });
  t.is(json.inclusion.path.length, 3);
  const missing = await runCli(['verify', journalDir, '--record', '31']);
  t.is(missing.code, 1);
  t.regex(missing.stdout, /record 31 is not in the journal, which holds seqs 1-30/);
});

test('auditmesh verify: bad usage exits 2 and says what is wrong', async (t) => {
  const noPath = await runCli(['verify']);
  t.is(noPath.code, 2);
  t.regex(noPath.stderr, /PATH \(the journal folder\) is required/);
  const missing = await runCli(['verify', join(await tempDir(t), 'nowhere')]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /no journal at/);
  const badHead = await runCli(['verify', '.', '--expect-head', 'abc']);
  t.is(badHead.code, 2);
  t.regex(badHead.stderr, /--expect-head: expected 64 lowercase hex digits/);
});

// The journal keeps moving while verify reads it, in another process and in this one: one read
// transaction gives both a consistent state, so a concurrent commit is never a "broken" journal.
test('a journal being written under load verifies at every moment, from another process and this one', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port, checkpointIntervalMs: 50 });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  t.teardown(() => agent.destroy());
  let running = true;
  const load = Promise.all(
    Array.from({ length: 16 }, async () => {
      while (running) await request(sidecar.ports.inbound!, { path: '/busy', agent });
    }),
  );
  const journalDir = sidecar.config.journalDir;
  const seen: number[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const child = await runCli(['verify', journalDir, '-o', 'json']);
      t.is(child.code, 0, child.stdout + child.stderr);
      seen.push(JSON.parse(child.stdout).last_seq);
      for (let j = 0; j < 20; j++) {
        const here = await verifyDir(journalDir);
        t.true(here.ok, here.failure?.problem);
        seen.push(here.last_seq);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  } finally {
    running = false;
    await load;
  }
  t.true(seen[seen.length - 1] > seen[0], `the journal grew while verified: ${seen[0]} -> ${seen[seen.length - 1]}`);
});
