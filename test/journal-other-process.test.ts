import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './helpers/child.js';
import { verifyDir, writeJournal } from './helpers/journal.js';
import { tempDir } from './helpers/sidecar.js';
import { startSidecarProcess } from './helpers/sidecar-process.js';
import { lmdbBuild } from '../ledger/lmdb-build.js';

// Another process opening a live journal (`auditmesh verify` in the pod, a backup) must not cost
// the writer a single commit. With the LMDB that lmdb-js 3.5.6 ships it did: an opener wrote a
// stale transaction id into the shared lock file while the writer committed (LMDB ITS#9496), the
// writer's next commit overwrote the last one, and verify found the chain broken there ("batch N
// is missing"). npm ci patches and compiles lmdb (patches/, lmdb-build.ts). Against the prebuilt
// binary the second test failed 2 of 2 runs with overlapping sync on ("batch 1133 is missing", and
// a hang), and rarely with it off (now): the first test is the one that fails every time.

test('npm ci installed the patched LMDB: lmdb-js loads the build that has the fix of ITS#9496', (t) => {
  const build = lmdbBuild();
  t.true(build.patched, build.problem);
});

const COMMITS = 1500;

/** Opens the environment read-only in a process of its own, reads every header, closes it. */
function openElsewhere(dir: string): Promise<number | null> {
  const script = `import { open } from 'lmdb'; const env = open({ path: ${JSON.stringify(dir)}, readOnly: true }); let n = 0; for (const _ of env.openDB('batches', { encoding: 'msgpack' }).getKeys()) n++; await env.close(); process.exit(0);`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, stdio: 'ignore' });
    child.once('exit', (code) => resolve(code));
  });
}

test('a sidecar on an LMDB without the fix says so at start; on the patched one it does not', async (t) => {
  const said = /^.*"level":"error","msg":"lmdb is not the patched build: another process opening the journal.*$/m;
  const prebuilt = await startSidecarProcess(t, { appPort: 9, env: { PREBUILDS_ONLY: '1' } });
  const [line] = await prebuilt.running.waitFor(said, 30_000);
  t.regex(line!, /ITS#9496/, 'the line names the missing fix');
  const patched = await startSidecarProcess(t, { appPort: 9 });
  await patched.stop();
  const { stdout, stderr } = patched.running.output();
  const log = stdout + stderr;
  t.regex(log, /"msg":"sidecar listening"/, 'the patched sidecar started and logged');
  t.notRegex(log, said);
  await prebuilt.stop();
});

test('a journal keeps every commit while other processes open it and read it', async (t) => {
  const journalDir = join(await tempDir(t), 'journal');
  let writing = true;
  let opened = 0;
  // Two at a time, so that an open often overlaps a commit.
  const opener = async (): Promise<void> => {
    while (writing) {
      if (!existsSync(join(journalDir, 'data.mdb'))) await new Promise((resolve) => setTimeout(resolve, 10));
      else if ((await openElsewhere(journalDir)) === 0) opened++;
    }
  };
  const elsewhere = Promise.all([opener(), opener()]);
  try {
    // One strict record per commit: every commit is awaited, flushed and counted on.
    await writeJournal({ journalDir, maxBatchRecords: 1 }, COMMITS, 1);
  } finally {
    writing = false;
    await elsewhere;
  }
  t.true(opened >= 5, `other processes opened the journal ${opened} times while it was written`);
  const report = await verifyDir(journalDir);
  t.true(report.ok, report.failure?.problem);
  t.is(report.records, COMMITS);
});
