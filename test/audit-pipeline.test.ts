import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createAuditPipeline, type AuditPipelineOptions } from '../proxy/audit/pipeline.js';
import { leafHash, merkleRoot } from '../ledger/merkle.js';
import type { AuditRecord, JournalRecord } from '../ledger/record.js';
import { readBatches, readJournal, readJournalBytes } from '../ledger/read-journal.js';
import { createSidecarMetrics } from '../proxy/metrics/metrics.js';
import type { ExecutionContext } from 'ava';

const execFileAsync = promisify(execFile);

function makeRecord(i: number, extra: Partial<AuditRecord> = {}): AuditRecord {
  return {
    'audit.kind': 'http',
    'audit.phase': 'final',
    'audit.direction': 'inbound',
    'audit.service': 'checkout',
    'audit.start_unix_ms': Date.now(),
    'http.request.method': 'GET',
    'url.path': `/items/${i}`,
    'http.response.status_code': 200,
    ...extra,
  };
}

async function openPipeline(t: ExecutionContext, opts: Partial<AuditPipelineOptions> = {}) {
  const journalDir = await mkdtemp(join(tmpdir(), 'auditmesh-pipeline-'));
  t.teardown(() => rm(journalDir, { recursive: true, force: true }));
  const pipeline = await createAuditPipeline({ journalDir, ...opts });
  t.teardown(() => pipeline.close());
  return { pipeline, journalDir };
}

test('writes records in order with contiguous sequence numbers', async (t) => {
  const { pipeline, journalDir } = await openPipeline(t);
  for (let i = 0; i < 600; i++) pipeline.record(makeRecord(i));
  await pipeline.close();
  const records = await readJournal(journalDir);
  t.deepEqual(records.map((r) => r['audit.seq']), Array.from({ length: 600 }, (_, i) => i + 1));
  t.deepEqual(records.map((r) => r['url.path']), Array.from({ length: 600 }, (_, i) => `/items/${i}`));
  t.is(records[0]['audit.service'], 'checkout');
  t.deepEqual((await readJournal(journalDir, { fromSeq: 300, limit: 2 })).map((r) => r['audit.seq']), [300, 301]);
});

// Serial: measured timings, so no other test of this file competes for the two cores.
test.serial('commits 10,000 records from a tight loop with no loss or duplicate', async (t) => {
  const metrics = createSidecarMetrics();
  const { pipeline } = await openPipeline(t, { metrics });
  const seen: JournalRecord[] = [];
  pipeline.subscribe((rec) => seen.push(rec));
  const started = performance.now();
  for (let i = 0; i < 10_000; i++) pipeline.record(makeRecord(i));
  const handedOver = performance.now();
  await pipeline.recordDurable(makeRecord(10_000));
  const durable = performance.now();
  t.log(`hand-over ${(((handedOver - started) * 1000) / 10_000).toFixed(2)} µs/record (incl. building it); ${Math.round(10_001 / ((durable - started) / 1000))} records/s to durable`);
  t.is(seen.length, 10_001);
  t.deepEqual(seen.map((r) => r['audit.seq']), Array.from({ length: 10_001 }, (_, i) => i + 1));
  t.deepEqual(seen.map((r) => r['url.path']), Array.from({ length: 10_001 }, (_, i) => `/items/${i}`));
  t.is(pipeline.read({ fromSeq: 10_001 })[0]['url.path'], '/items/10000');
  t.is((await metrics.journalRecords.get()).values.find((v) => v.labels.result === 'written')?.value, 10_001);
  t.is((await metrics.batcherPending.get()).values[0].value, 0);
});

test('recordDurable resolves only once a fresh reader in another process sees the record', async (t) => {
  const { pipeline, journalDir } = await openPipeline(t);
  await pipeline.recordDurable(makeRecord(1, { 'audit.request_id': 'strict-1' }));
  const reader = new URL('../ledger/read-journal.ts', import.meta.url).href;
  const script = `import { readJournal } from ${JSON.stringify(reader)};
    const recs = await readJournal(${JSON.stringify(journalDir)});
    process.stdout.write(JSON.stringify(recs.map((r) => r['audit.request_id'])));`;
  const { stdout } = await execFileAsync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script]);
  t.deepEqual(JSON.parse(stdout), ['strict-1']);
});

test.serial('concurrent strict records share one batch, sealed promptly rather than after the batch delay', async (t) => {
  const { pipeline } = await openPipeline(t, { maxBatchDelayMs: 5_000 });
  const started = performance.now();
  await Promise.all(Array.from({ length: 50 }, (_, i) => pipeline.recordDurable(makeRecord(i))));
  const elapsedMs = performance.now() - started;
  t.log(`50 concurrent strict records durable in ${elapsedMs.toFixed(1)} ms`);
  t.true(elapsedMs < 1_000);
  const batches = pipeline.readBatches().filter((b) => b.kind === 'records');
  t.is(batches.length, 1);
  t.like(batches[0], { first_seq: 1, count: 50 });
});

test('stores in each batch header the Merkle root of the stored record bytes', async (t) => {
  const { pipeline, journalDir } = await openPipeline(t, { maxBatchRecords: 100 });
  for (let i = 0; i < 250; i++) pipeline.record(makeRecord(i, { 'url.query': `q=${'é'.repeat(i % 7)}` }));
  await pipeline.close();
  const batches = (await readBatches(journalDir)).filter((b) => b.kind === 'records');
  const stored = await readJournalBytes(journalDir);
  t.deepEqual(batches.map((b) => b.count), [100, 100, 50]);
  for (const header of batches) {
    const bytes = stored.filter((r) => r.seq >= header.first_seq && r.seq < header.first_seq + header.count).map((r) => r.bytes);
    t.is(merkleRoot(bytes.map((b) => leafHash(b))).toString('hex'), header.root);
    t.true(header.sealed_unix_ms <= Date.now());
  }
  // The stored bytes are the record's JSON, keys in insertion order.
  t.is(stored[0].bytes.toString('utf8'), JSON.stringify(JSON.parse(stored[0].bytes.toString('utf8'))));
  t.regex(stored[0].bytes.toString('utf8'), /^\{"audit\.kind":"http","audit\.phase":"final"/);
});

test('a throwing subscriber neither stops other subscribers nor the journal', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const { pipeline } = await openPipeline(t, { log: (line) => lines.push(line) });
  const seen: number[] = [];
  pipeline.subscribe(() => {
    throw new Error('listener bug');
  });
  const unsubscribe = pipeline.subscribe((rec) => seen.push(rec['audit.seq']));
  await pipeline.recordDurable(makeRecord(1));
  await pipeline.recordDurable(makeRecord(2));
  unsubscribe();
  await pipeline.recordDurable(makeRecord(3));
  t.deepEqual(seen, [1, 2]);
  t.is(pipeline.read().length, 3);
  t.is(lines.filter((l) => l.msg === 'live feed listener threw; it keeps its subscription').length, 1);
});

test('drops a record that cannot be encoded and keeps the rest of its batch', async (t) => {
  const metrics = createSidecarMetrics();
  const { pipeline, journalDir } = await openPipeline(t, { metrics });
  pipeline.record(makeRecord(1));
  t.notThrows(() => pipeline.record(makeRecord(2, { 'audit.bytes_in': 1n as unknown as number })));
  pipeline.record(makeRecord(3));
  await pipeline.close();
  t.deepEqual((await readJournal(journalDir)).map((r) => r['url.path']), ['/items/1', '/items/3']);
  t.is((await metrics.journalUnrecorded.get()).values.find((v) => v.labels.reason === 'encode')?.value, 1);
});

test('close seals pending records, is idempotent, and later records are counted, not thrown', async (t) => {
  const metrics = createSidecarMetrics();
  const { pipeline, journalDir } = await openPipeline(t, { metrics, maxBatchDelayMs: 60_000 });
  pipeline.record(makeRecord(1));
  await Promise.all([pipeline.close(), pipeline.close()]);
  t.notThrows(() => pipeline.record(makeRecord(2)));
  await t.throwsAsync(pipeline.recordDurable(makeRecord(3)), { code: 'AUDITMESH_JOURNAL_WRITE' });
  t.deepEqual((await readJournal(journalDir)).map((r) => r['url.path']), ['/items/1']);
  t.is((await metrics.journalUnrecorded.get()).values.find((v) => v.labels.reason === 'closed')?.value, 1);
});
