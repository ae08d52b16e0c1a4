import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { createAuditPipeline } from '../proxy/audit/pipeline.js';
import type { AuditRecord } from '../ledger/record.js';
import { readBatches, readJournal } from '../ledger/read-journal.js';
import { createSidecarMetrics, type SidecarMetrics } from '../proxy/metrics/metrics.js';

const execFileAsync = promisify(execFile);

function makeRecord(i: number, extra: Partial<AuditRecord> = {}): AuditRecord {
  return {
    'audit.kind': 'http',
    'audit.phase': 'final',
    'audit.direction': 'outbound',
    'audit.service': 'billing',
    'audit.start_unix_ms': Date.now(),
    'url.path': `/invoices/${i}`,
    ...extra,
  };
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-journal-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function counter(metrics: SidecarMetrics, metric: 'journalRecords' | 'journalUnrecorded', label: string): Promise<number> {
  const { values } = await metrics[metric].get();
  return values.find((v) => Object.values(v.labels).includes(label))?.value ?? 0;
}

test('continues sequence and batch numbers after close and reopen', async (t) => {
  const journalDir = await tempDir(t);
  const first = await createAuditPipeline({ journalDir });
  t.teardown(() => first.close());
  for (let i = 0; i < 300; i++) first.record(makeRecord(i));
  await first.close();
  const second = await createAuditPipeline({ journalDir });
  t.teardown(() => second.close());
  for (let i = 300; i < 310; i++) second.record(makeRecord(i));
  await second.close();
  const records = await readJournal(journalDir);
  t.deepEqual(records.map((r) => r['audit.seq']), Array.from({ length: 310 }, (_, i) => i + 1));
  t.is(records[309]['url.path'], '/invoices/309');
  const batches = await readBatches(journalDir);
  t.deepEqual(batches.map((b) => b.batch), Array.from({ length: batches.length }, (_, i) => i + 1));
  // Each open starts a boot epoch with a link of its own; a slow run may add checkpoint links.
  t.deepEqual(
    batches.filter((b) => b.kind !== 'checkpoint').map((b) => [b.kind, b.epoch, b.first_seq, b.count]),
    [['epoch', 1, 1, 0], ['records', 1, 1, 256], ['records', 1, 257, 44], ['epoch', 2, 301, 0], ['records', 2, 301, 10]],
  );
});

test('refuses to open a journal twice in one process, and in-process readers reuse the open one', async (t) => {
  const journalDir = await tempDir(t);
  const pipeline = await createAuditPipeline({ journalDir });
  t.teardown(() => pipeline.close());
  await t.throwsAsync(createAuditPipeline({ journalDir }), { code: 'AUDITMESH_JOURNAL_OPEN' });
  await pipeline.recordDurable(makeRecord(1));
  // lmdb-js#164: a second environment in this process would misbehave; readJournal reads through the writer.
  t.deepEqual((await readJournal(journalDir)).map((r) => r['url.path']), ['/invoices/1']);
});

test('fails to open, with a coded error, where the journal folder cannot exist', async (t) => {
  const parent = join(await tempDir(t), 'a-regular-file');
  await writeFile(parent, 'not a folder');
  await t.throwsAsync(createAuditPipeline({ journalDir: join(parent, 'journal') }), { code: 'AUDITMESH_JOURNAL_OPEN' });
});

/** This process's RLIMIT_FSIZE, [soft, hard], as prlimit prints it ("unlimited" or bytes). */
async function fileSizeLimit(): Promise<[string, string]> {
  const { stdout } = await execFileAsync('prlimit', ['--pid', String(process.pid), '--fsize', '--raw', '--noheadings', '--output=SOFT,HARD']);
  return stdout.trim().split(/\s+/) as [string, string];
}

async function setFileSizeLimit(soft: string, hard: string): Promise<void> {
  await execFileAsync('prlimit', ['--pid', String(process.pid), `--fsize=${soft}:${hard}`]);
}

// A full disk, for real: RLIMIT_FSIZE makes the journal's next file growth fail with EFBIG, as
// ENOSPC would, and it works as root (chmod does not). Node ignores SIGXFSZ, so the write fails
// instead of killing the process. Serial: the limit applies to the whole test process.
test.serial('a journal that cannot grow goes unwritable, counts the loss, logs once, and recovers', async (t) => {
  // prlimit is in util-linux, an essential Debian package: present wherever CI runs.
  const limit = await fileSizeLimit();
  const metrics = createSidecarMetrics();
  const lines: Record<string, unknown>[] = [];
  const journalDir = await tempDir(t);
  const pipeline = await createAuditPipeline({ journalDir, metrics, log: (line) => lines.push(line) });
  t.teardown(() => pipeline.close());
  await pipeline.recordDurable(makeRecord(0));
  const { size } = await stat(join(journalDir, 'data.mdb'));
  await setFileSizeLimit(String(size), limit[1]);
  t.teardown(() => setFileSizeLimit(...limit));

  const large = { 'audit.error_message': 'x'.repeat(4_000) };
  t.notThrows(() => {
    for (let i = 1; i <= 300; i++) pipeline.record(makeRecord(i, large));
  });
  await t.throwsAsync(pipeline.recordDurable(makeRecord(301, large)), { code: 'AUDITMESH_JOURNAL_WRITE' });
  t.false(pipeline.writable);
  await t.throwsAsync(pipeline.recordDurable(makeRecord(302, large)), { code: 'AUDITMESH_JOURNAL_WRITE' });
  t.is(await counter(metrics, 'journalRecords', 'failed'), 302);
  t.is(await counter(metrics, 'journalUnrecorded', 'journal_write'), 302);
  t.is(lines.filter((line) => line.level === 'error').length, 1);

  await setFileSizeLimit(...limit);
  await pipeline.recordDurable(makeRecord(400, large));
  t.true(pipeline.writable);
  // No gap: the failed batches consumed no sequence numbers.
  t.deepEqual(pipeline.read().map((r) => [r['audit.seq'], r['url.path']]), [[1, '/invoices/0'], [2, '/invoices/400']]);
  t.is(await counter(metrics, 'journalRecords', 'written'), 2);
  t.true(lines.some((line) => line.msg === 'journal writable again'));
});
