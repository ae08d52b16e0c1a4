import test from 'ava';
import { join } from 'node:path';
import { open } from 'lmdb';
import type { ExecutionContext } from 'ava';
import { BatchBlob } from '../control/collector/store/batch-blob.js';
import { BATCHES_DB, openCollectorStores } from '../control/collector/store/store-layout.js';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { journalShipment, openSync, startTestCollector, toUncompressedBatches, type TestCollector, type TestCollectorOptions } from './helpers/collector.js';
import { makeRecord, writeJournal } from './helpers/journal.js';
import type { AuditRecord } from '../ledger/record.js';
import { runCli, startCli } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';

/** A collector holding one sidecar's 24 records: request ids req-0..23, every sixth a 502. */
async function filledCollector(t: ExecutionContext, sidecarId = 'pod-a', extra: (i: number) => Partial<AuditRecord> = () => ({}), opts: TestCollectorOptions = {}): Promise<TestCollector> {
  const c = await startTestCollector(t, opts);
  const journalDir = join(await tempDir(t), 'journal');
  const T0 = Date.now() - 60_000;
  const key = ephemeralSigningKey();
  await writeJournal({ journalDir, maxBatchRecords: 3, signingKey: key }, 3, 8, (i) =>
    makeRecord(i, { 'audit.service': 'ledger', 'audit.request_id': `req-${i}`, 'audit.start_unix_ms': T0 + i, 'http.response.status_code': i % 6 === 5 ? 502 : 200, ...extra(i) }),
  );
  const s = await journalShipment(journalDir, key, sidecarId, 'ledger');
  const peer = openSync(t, c.grpcAddress, c.token);
  peer.send({ hello: s.hello });
  await peer.next();
  for (const segment of s.segments) peer.send({ segment });
  for (let i = 0; i < s.segments.length; i++) t.like(await peer.next(), { body: 'ack' });
  peer.close();
  return c;
}

test('auditmesh query prints a table for people, JSON lines with -o json, and exits 1 only when it found an error record', async (t) => {
  const c = await filledCollector(t);
  const table = await runCli(['query', '--collector', c.httpUrl, ...c.readerArgs, '--correlation-id', 'req-3']);
  t.is(table.code, 0, table.stderr);
  t.regex(table.stdout, /ledger\s+in\s+#4\s+unknown → ledger\s+GET \/items\/3\s+200/);
  t.regex(table.stderr, /1 records, newest first/);

  const json = await runCli(['query', '--collector', c.httpUrl, ...c.readerArgs, '--status', '5xx', '--since', '10m', '-o', 'json']);
  t.is(json.code, 1, 'a query that found error records exits 1');
  const recs = json.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.deepEqual(recs.map((r) => r['audit.request_id']), ['req-23', 'req-17', 'req-11', 'req-5']);
  t.true(recs.every((r) => r['audit.sidecar_id'] === 'pod-a'));

  const limited = await runCli(['query', '--collector', c.httpUrl, ...c.readerArgs, '--service', 'ledger', '--status', 'ok', '--limit', '2', '-o', 'json']);
  t.is(limited.code, 0);
  t.deepEqual(limited.stdout.trim().split('\n').map((l) => JSON.parse(l)['audit.request_id']), ['req-22', 'req-21']);
});

test('a query for an id that more records carry than the collector gathers is refused with 400, and auditmesh query exits 2 saying so', async (t) => {
  // 20 of the 24 records share one request id; the collector gathers at most 10 for one id.
  const c = await filledCollector(t, 'pod-s', (i) => (i < 20 ? { 'audit.request_id': 'req-same' } : {}), { maxIdMatches: 10 });
  const res = await fetch(`${c.httpUrl}/v1/records?correlation_id=req-same`, c.readAuth);
  t.is(res.status, 400);
  t.is(await res.text(), 'bad query: correlation_id "req-same": more than 10 records carry it; narrow it with since and until\n');
  const cli = await runCli(['query', '--collector', c.httpUrl, ...c.readerArgs, '--correlation-id', 'req-same']);
  t.is(cli.code, 2);
  t.regex(cli.stderr, /the collector answered 400: bad query: correlation_id "req-same": more than 10 records carry it/);
  const other = await runCli(['query', '--collector', c.httpUrl, ...c.readerArgs, '--correlation-id', 'req-21', '-o', 'json']);
  t.is(other.code, 0, other.stderr);
  t.deepEqual(other.stdout.trim().split('\n').map((l) => JSON.parse(l)['audit.request_id']), ['req-21']);
  t.is((await fetch(`${c.httpUrl}/livez`)).status, 200, 'the collector serves on');
});

test('auditmesh query: bad usage exits 2 and says what is wrong', async (t) => {
  for (const [args, message] of [
    [['query'], /--collector URL is required/],
    [['query', '--collector', 'http://127.0.0.1:1', '--since', 'last tuesday'], /--since: expected a duration back from now/],
    [['query', '--collector', 'http://127.0.0.1:1', '--status', 'teapot'], /--status: expected 5xx/],
    [['query', '--collector', 'http://127.0.0.1:1', '--limit', '0'], /--limit: expected 1 to 10000/],
  ] as const) {
    const r = await runCli([...args]);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, message);
  }
});

test('auditmesh collector refuses to start without a token file unless --insecure, and serves with one', async (t) => {
  const dir = await tempDir(t);
  const refused = await runCli(['collector', '--store', join(dir, 'store'), '--grpc-port', '0', '--http-port', '0']);
  t.is(refused.code, 2);
  t.regex(refused.stderr, /no --token-file/);
  const running = startCli(t, ['collector', '--store', join(dir, 'store'), '--grpc-port', '0', '--http-port', '0', '--insecure']);
  const [, http] = await running.waitFor(/"http":"(http:\/\/127\.0\.0\.1:\d+)"/);
  t.is((await fetch(`${http}/livez`)).status, 200);
  running.child.kill('SIGTERM');
  t.is((await running.done).code, 0);
});

test('auditmesh tail --collector streams the records the collector stores', async (t) => {
  const c = await startTestCollector(t);
  const tail = startCli(t, ['tail', '--collector', c.httpUrl, ...c.readerArgs, '-o', 'json']);
  const journalDir = join(await tempDir(t), 'journal');
  const key = ephemeralSigningKey();
  await writeJournal({ journalDir, maxBatchRecords: 3, signingKey: key }, 1, 3);
  const s = await journalShipment(journalDir, key, 'pod-t');
  // Ship only once the tail is subscribed: its process has started and connected when the collector sees a client.
  await waitForTailClient(c);
  const peer = openSync(t, c.grpcAddress, c.token);
  peer.send({ hello: s.hello });
  await peer.next();
  for (const segment of s.segments) peer.send({ segment });
  for (let i = 0; i < s.segments.length; i++) await peer.next();
  const [line] = await tail.waitFor(/\{"audit\.kind".*"audit\.seq":3.*\}/);
  t.is(JSON.parse(line)['audit.sidecar_id'], 'pod-t');
});

async function waitForTailClient(c: TestCollector): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (c.liveListeners === 0) {
    if (Date.now() > deadline) throw new Error('tail never connected');
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('auditmesh verify STORE passes on a good collector store and names the record after a byte of it is changed', async (t) => {
  const c = await filledCollector(t, 'pod-v');
  await c.close();
  const good = await runCli(['verify', c.storeDir]);
  t.is(good.code, 0, good.stdout + good.stderr);
  t.regex(good.stdout, /ok\s+pod-v .* 24 records/);
  t.regex(good.stdout, /collector store verified: 24 records of 1 sidecars/);

  // Change one byte of record 7 in the store, as someone with write access to its files would.
  const stores = openCollectorStores(open({ path: c.storeDir }));
  const held = Array.from(stores.batches.getRange({ start: ['pod-v', 0], end: ['pod-v', Number.MAX_SAFE_INTEGER] })).find(({ value }) => {
    const b = new BatchBlob(value);
    return b.firstSeq <= 7 && 7 < b.firstSeq + b.count;
  })!;
  const blob = Buffer.from(held.value);
  const batch = new BatchBlob(blob);
  const at = batch.offsetOf(7 - batch.firstSeq) + batch.bytes(7 - batch.firstSeq).indexOf('/items/6');
  blob[at] = '/'.charCodeAt(0) + 1;
  stores.batches.putSync(held.key, blob);
  await stores.env.close();

  const bad = await runCli(['verify', c.storeDir, '-o', 'json']);
  t.is(bad.code, 1);
  const report = JSON.parse(bad.stdout);
  t.like(report, { ok: false, failure: { sidecar: 'pod-v', code: 'bad-root' } });
  const text = await runCli(['verify', c.storeDir]);
  t.like(report.failure, { seq: 7 });
  t.regex(text.stdout, /verification FAILED: sidecar pod-v, record 7: record 7 \(batch \d+\): its bytes no longer hash to the leaf/);
});

test('auditmesh verify fails a store whose batch value was changed as it lies compressed on disk', async (t) => {
  // Long paths, so that every batch value is past lmdb-js's threshold for compressing (1,000 bytes).
  const c = await filledCollector(t, 'pod-x', (i) => ({ 'url.path': `/items/${i}/${'part/'.repeat(80)}` }));
  await c.close();
  // The bytes LMDB holds, not what lmdb-js decompresses: a byte changed in the LZ4 stream itself.
  const env = open({ path: c.storeDir, maxDbs: 32 });
  const raw = env.openDB<Buffer, [string, number]>(BATCHES_DB, { encoding: 'binary', compression: false });
  const held = Array.from(raw.getRange({ start: ['pod-x', 0], end: ['pod-x', Number.MAX_SAFE_INTEGER] }))[0];
  t.is(held.value[0], 254, 'stored LZ4-compressed');
  const bytes = Buffer.from(held.value);
  bytes[Math.floor(bytes.length / 2)] ^= 0x20;
  raw.putSync(held.key, bytes);
  await env.close();

  const bad = await runCli(['verify', c.storeDir, '-o', 'json']);
  t.is(bad.code, 1, bad.stdout + bad.stderr);
  // Whatever lmdb-js makes of the stream (records that no longer hash to their leaves here, or a
  // value that is no batch), verify names the batch.
  t.like(JSON.parse(bad.stdout), { ok: false, failure: { sidecar: 'pod-x', batch: held.key[1] } });
});

test('a collector store of a layout from before 0.1.0 is refused by the collector and by verify with a message saying so, and left as it is', async (t) => {
  const c = await filledCollector(t, 'pod-z');
  await c.close();
  const env = open({ path: c.storeDir, maxDbs: 32 });
  t.true(toUncompressedBatches(env) > 0);
  await env.close();
  const why = `${c.storeDir} is a collector store in a layout from before auditmesh 0.1.0 (uncompressed batch values, database "batches"), which no release reads: it is left as it is; start the collector on an empty --store directory`;
  const collector = await runCli(['collector', '--store', c.storeDir, '--grpc-port', '0', '--http-port', '0', '--insecure']);
  t.is(collector.code, 1, collector.stdout + collector.stderr);
  t.true(collector.stderr.includes(`auditmesh collector: cannot start: ${why}`), collector.stderr);
  const verified = await runCli(['verify', c.storeDir]);
  t.is(verified.code, 1, verified.stdout + verified.stderr);
  t.true(verified.stderr.includes(why), verified.stderr);
  const after = open({ path: c.storeDir, readOnly: true });
  t.teardown(() => after.close());
  t.true(Array.from(after.getKeys(), String).includes('batches'));
});
