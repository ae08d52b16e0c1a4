import test from 'ava';
import http from 'node:http';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { JournalRecord } from '../ledger/record.js';
import type { Logger } from '../command/log.js';
import { formatRecordLine } from '../control/cli/format-record.js';
import { createAuditPipeline } from '../proxy/audit/pipeline.js';
import { parseSidecarConfig } from '../proxy/config.js';
import { readJournal } from '../ledger/read-journal.js';
import { request, startUpstream, type Reply } from './helpers/net.js';
import { metricValue, scrape, startTestSidecar } from './helpers/sidecar.js';
import { makeRecord, verifyDir } from './helpers/journal.js';
import { tempDir } from './helpers/sidecar.js';

// Records of ~2.5 KB (a long path) against a bound of 256 KiB: full after about a hundred.
const LIMIT_BYTES = 256 * 1024;
// Long enough that nothing is pruned while a loaded machine fills the journal.
const RETENTION_MS = 8_000;
const LONG = '/fill/' + 'x'.repeat(2000);

async function boundedSidecar(t: ExecutionContext, onJournalFull: 'reject' | 'pass', journalRetentionMs = 0) {
  const app = await startUpstream();
  t.teardown(app.close);
  const logged: string[] = [];
  const log: Logger = (level, msg) => logged.push(`${level} ${msg}`);
  const sidecar = await startTestSidecar(t, { appPort: app.port, journalLimitBytes: LIMIT_BYTES, onJournalFull, journalRetentionMs, checkpointIntervalMs: 100 }, log);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  const send = (i: number): Promise<Reply> => request(sidecar.ports.inbound!, { path: `${LONG}?i=${i}`, headers: { 'x-request-id': `fill-${i}` }, agent });
  return { app, sidecar, send, logged };
}

/** Sends batches of 8 until the journal reports full (the size is sampled as commits land). */
async function fillUntilFull(sidecar: { ports: { admin: number } }, send: (i: number) => Promise<Reply>): Promise<{ replies: Reply[]; next: number }> {
  const replies: Reply[] = [];
  let i = 0;
  while (metricValue(await scrape(sidecar.ports.admin), 'auditmesh_journal_full') !== 1) {
    if (i > 2000) throw new Error('the journal never reported full');
    replies.push(...(await Promise.all(Array.from({ length: 8 }, () => send(i++)))));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { replies, next: i };
}

const idOf = (rec: JournalRecord): string | undefined => rec['audit.request_id'];

test('reject: at the bound new requests get 503 before the upstream, counted, logged, not ready; retention makes room again', async (t) => {
  const { app, sidecar, send, logged } = await boundedSidecar(t, 'reject', RETENTION_MS);
  const { replies, next } = await fillUntilFull(sidecar, send);
  // The bound is sampled as commits land: the last few sent may already have met it.
  const firstRefused = replies.findIndex((r) => r.status !== 200);
  t.true(firstRefused === -1 || replies.slice(firstRefused).every((r) => r.status === 503), 'below the bound everything went through');
  t.true(replies.filter((r) => r.status === 200).length >= 50);

  const refused = await send(next);
  t.is(refused.status, 503);
  t.is(refused.headers['x-auditmesh-error'], 'AUDITMESH_JOURNAL_WRITE');
  t.false(app.seen.some((s) => s.headers['x-request-id'] === `fill-${next}`), 'the upstream never saw the refused request');
  const ready = await request(sidecar.ports.admin, { path: '/readyz' });
  t.is(ready.status, 503);
  t.regex(ready.body.toString(), /audit journal is full \(\d+ of 262144 bytes\); on-journal-full reject/);
  const metrics = await scrape(sidecar.ports.admin);
  t.is(metricValue(metrics, 'auditmesh_journal_rejected_total'), 1 + replies.filter((r) => r.status === 503).length);
  t.true(metricValue(metrics, 'auditmesh_journal_bytes') >= LIMIT_BYTES);
  t.is(metricValue(metrics, 'auditmesh_journal_limit_bytes'), LIMIT_BYTES);
  t.is(logged.filter((l) => l === 'error journal full: the on-journal-full policy applies').length, 1);

  // Retention prunes the oldest records, the journal drops below its bound, traffic flows again.
  let after: Reply | undefined;
  for (let tries = 0; tries < 300 && after?.status !== 200; tries++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    after = await send(next + 1 + tries);
  }
  t.is(after?.status, 200);
  t.true(metricValue(await scrape(sidecar.ports.admin), 'auditmesh_journal_pruned_records_total') > 0);
  t.true(logged.includes('info journal below its limit again'));
  await sidecar.close();

  // Every exchange the upstream saw is in the journal, save what retention pruned; nothing refused is.
  const report = await verifyDir(sidecar.config.journalDir);
  t.true(report.ok, report.failure?.problem);
  t.truthy(report.pruned_through, 'verified from the oldest retained batch');
  const ids = new Set((await readJournal(sidecar.config.journalDir)).map(idOf));
  t.false(ids.has(`fill-${next}`));
  t.true(ids.has(after!.headers['x-request-id'] as string));
});

test('pass: at the bound requests go through unrecorded, degraded but ready, and a signed gap record counts every one of them', async (t) => {
  const { app, sidecar, send, logged } = await boundedSidecar(t, 'pass');
  const { next } = await fillUntilFull(sidecar, send);
  const passed = await Promise.all(Array.from({ length: 20 }, (_, k) => send(next + k)));
  t.true(passed.every((r) => r.status === 200));
  const ready = await request(sidecar.ports.admin, { path: '/readyz' });
  t.is(ready.status, 200);
  t.regex(ready.body.toString(), /^ready, degraded: audit journal is full .*on-journal-full pass: forwarding unrecorded/);
  const metrics = await scrape(sidecar.ports.admin);
  t.true(metricValue(metrics, 'auditmesh_journal_gap_exchanges_total', { reason: 'journal_full' }) >= 20);
  t.is(metricValue(metrics, 'auditmesh_journal_rejected_total'), 0);
  await sidecar.close();
  t.true(logged.includes('warn gap record written: exchanges went through unrecorded'));

  // No silent loss: each exchange the upstream saw has its record, or is counted in a gap record.
  const report = await verifyDir(sidecar.config.journalDir);
  t.true(report.ok, report.failure?.problem);
  const records = await readJournal(sidecar.config.journalDir);
  const recorded = new Set(records.filter((r) => r['audit.kind'] === 'http').map(idOf));
  const unrecorded = app.seen.filter((s) => !recorded.has(s.headers['x-request-id'] as string)).length;
  const gaps = records.filter((r) => r['audit.kind'] === 'gap');
  t.true(gaps.length >= 1);
  t.true(unrecorded >= 20);
  t.is(gaps.reduce((sum, g) => sum + g['audit.gap.exchanges']!, 0), unrecorded);
  t.like(gaps[0], { 'audit.gap.reason': 'journal_full', 'audit.direction': 'inbound', 'audit.service': 'svc' });
  t.regex(formatRecordLine(gaps[0]), new RegExp(`GAP ${gaps[0]['audit.gap.exchanges']} unrecorded \\(journal_full\\)`), 'as auditmesh tail shows it');
  t.true(gaps.every((g) => g['audit.start_unix_ms'] + g['audit.duration_ms']! <= Date.now()));
});

test('the journal flags are checked at boot, naming the flag or variable at fault', (t) => {
  const defaults = parseSidecarConfig([], {});
  t.like(defaults, { journalLimitBytes: 1024 ** 3, onJournalFull: 'reject', journalRetentionMs: 7 * 86_400_000, checkpointIntervalMs: 5000 });
  t.is(parseSidecarConfig(['--journal-retention', '90s'], {}).journalRetentionMs, 90_000);
  t.is(parseSidecarConfig([], { AUDITMESH_JOURNAL_RETENTION: '12h' }).journalRetentionMs, 43_200_000);
  t.is(parseSidecarConfig(['--journal-retention', '0'], {}).journalRetentionMs, 0);
  t.throws(() => parseSidecarConfig(['--journal-retention', '10 days'], {}), { message: /--journal-retention: expected a duration such as 90s/ });
  t.throws(() => parseSidecarConfig(['--journal-retention', '15'], {}), { message: /--journal-retention: expected a duration/ });
  t.throws(() => parseSidecarConfig([], { AUDITMESH_ON_JOURNAL_FULL: 'drop' }), { message: /AUDITMESH_ON_JOURNAL_FULL: expected one of reject, pass/ });
  t.throws(() => parseSidecarConfig(['--checkpoint-interval-ms', '0'], {}), { message: /--checkpoint-interval-ms: at least 10/ });
});

// Memory is bounded too: a journal that cannot keep up is treated like a full one.
test('a journal too far behind applies the policy: reject refuses until it catches up, pass sheds into a gap record', async (t) => {
  for (const onJournalFull of ['reject', 'pass'] as const) {
    const journalDir = join(await tempDir(t), 'journal');
    const pipeline = await createAuditPipeline({ journalDir, onJournalFull, maxPendingRecords: 500, checkpointIntervalMs: 50 });
    t.teardown(() => pipeline.close());
    // 5,000 records handed over in one turn: none can be committed before the loop ends.
    for (let i = 0; i < 5000; i++) pipeline.record(makeRecord(i));
    const readiness = pipeline.readiness();
    t.regex(readiness.reason ?? '', /audit journal is behind \(\d+ records waiting, at most 500\)/, onJournalFull);
    t.is(readiness.ok, onJournalFull === 'pass');
    t.is(pipeline.admits(), onJournalFull === 'pass');
    const started = Date.now();
    while (!pipeline.admits() || pipeline.readiness().reason !== undefined) {
      if (Date.now() - started > 20_000) return t.fail('the journal never caught up');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await pipeline.close();
    const records = await readJournal(journalDir);
    const kept = records.filter((r) => r['audit.kind'] === 'http').length;
    const covered = records.filter((r) => r['audit.kind'] === 'gap').reduce((sum, g) => sum + g['audit.gap.exchanges']!, 0);
    if (onJournalFull === 'reject') t.is(kept, 5000, 'admitted records are all kept');
    else {
      t.true(kept >= 500 && kept < 5000, `${kept} kept`);
      t.is(kept + covered, 5000, 'every record shed is counted in a gap record');
      t.true(records.some((r) => r['audit.gap.reason'] === 'journal_behind'));
    }
    t.true((await verifyDir(journalDir)).ok);
  }
});
