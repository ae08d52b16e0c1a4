import { metric, storedRecords } from './helpers/collector-reads.js';
import test, { type ExecutionContext } from 'ava';
import { startTestCollector, type TestCollector } from './helpers/collector.js';
import { eventually, startShippingSidecar } from './helpers/shipping.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedLog, type ReceiverProtocol } from './helpers/otlp-receiver.js';
import { otlpProtocolFrom } from '../control/collector/export/otlp-transport.js';
import { MAX_EXPORT_RECORDS } from '../control/collector/export/otlp-export.js';
import type { CollectedRecord } from '../control/collector/api/record-query.js';
import { join } from 'node:path';
import { startProcess, CLI } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';

// The collector exports what it stores as OTLP logs to a receiver built from the official
// protobuf definitions, over each of the three protocols; one receiver goes away for a while and
// the collector restarts meanwhile: every record arrives, at least once, from the cursor kept in
// the store, and the lag metric comes back to 0.

const FAST_EXPORT = { pollMs: 100, retryMaxMs: 300, timeoutMillis: 2_000 };

const uidOf = (r: CollectedRecord): string => `${r['audit.sidecar_id']}:${r['audit.seq']}`;

async function collectorExportingTo(t: ExecutionContext, receiver: OtlpReceiver, protocol: ReceiverProtocol, storeDir?: string): Promise<TestCollector> {
  return startTestCollector(t, { token: 'test-token', ...(storeDir === undefined ? {} : { storeDir }), exportOtlp: { protocol, url: receiver.url, ...FAST_EXPORT } });
}

/** Every stored record reached the receiver: as many times as at-least-once allows, no fewer than once. */
function assertDelivered(t: ExecutionContext, stored: CollectedRecord[], logs: ReceivedLog[]): void {
  const received = new Map<string, number>();
  for (const l of logs) received.set(l.uid, (received.get(l.uid) ?? 0) + 1);
  const missing = stored.map(uidOf).filter((uid) => !received.has(uid));
  t.deepEqual(missing, [], 'every stored record was exported');
  const extra = logs.length - received.size;
  t.true(extra <= MAX_EXPORT_RECORDS, `${extra} sent again: at most one export request's worth`);
  t.is(received.size, stored.length, 'nothing exported that is not stored');
}

/** A received log record says what the stored record says, under OTel names. */
function assertMapped(t: ExecutionContext, stored: CollectedRecord, log: ReceivedLog): void {
  t.is(log.attributes['http.request.method'], stored['http.request.method']);
  t.is(log.attributes['url.path'], stored['url.path']);
  t.is(log.attributes['http.response.status_code'], stored['http.response.status_code']);
  t.is(log.attributes['audit.request_id'], stored['audit.request_id']);
  t.is(log.attributes['audit.seq'], stored['audit.seq']);
  t.is(log.traceId, stored['trace.id'] ?? '');
  t.is(log.spanId, stored['span.id'] ?? '');
  t.is(log.resource['service.name'], 'ledger');
  t.is(log.resource['service.instance.id'], 'ledger-0');
  t.is(typeof log.resource['auditmesh.sidecar.key_id'], 'string');
  t.is(log.scope, 'auditmesh');
  t.is(log.eventName, 'auditmesh.http');
  t.is(log.severityText, 'INFO');
  t.is(log.severityNumber, 9);
  t.regex(String(log.body), /GET \/items\/\S+ 200$/);
  t.is(BigInt(log.timeUnixNano) / 1_000_000n, BigInt(Math.floor(stored['audit.start_unix_ms'])));
}

for (const protocol of ['grpc', 'http/json'] as const) {
  test(`exports every stored record as an OTLP log over ${protocol}, with the record's OTel attributes and the sidecar as its resource`, async (t) => {
    const receiver = await startOtlpReceiver(t, protocol);
    const collector = await collectorExportingTo(t, receiver, protocol);
    const { send } = await startShippingSidecar(t, collector.grpcAddress);
    for (let i = 0; i < 20; i++) t.is(await send(`${protocol}-${i}`), 200);
    await eventually('20 records stored', async () => (await metric(collector, 'auditmesh_collector_records_stored_total')) >= 20);
    const stored = (await storedRecords(collector)).filter((r) => r['audit.kind'] === 'http');
    await eventually('every stored record exported', () => stored.every((r) => receiver.logs.some((l) => l.uid === uidOf(r))));
    assertMapped(t, stored[0], receiver.logs.find((l) => l.uid === uidOf(stored[0]))!);
    await eventually('the lag back to 0', async () => (await metric(collector, 'auditmesh_collector_export_lag_records')) === 0);
    t.true((await metric(collector, 'auditmesh_collector_exported_records_total')) >= 20);
  });
}

test('over http/protobuf, a receiver away while the collector restarts loses nothing: the export resumes from its cursor, sends again at most one request, and the lag returns to 0', async (t) => {
  const receiver = await startOtlpReceiver(t, 'http/protobuf');
  const first = await collectorExportingTo(t, receiver, 'http/protobuf');
  const { send } = await startShippingSidecar(t, first.grpcAddress);
  for (let i = 0; i < 30; i++) t.is(await send(`before-${i}`), 200);
  await eventually('30 records exported', () => new Set(receiver.logs.map((l) => l.uid)).size >= 30);

  await receiver.stop();
  for (let i = 0; i < 60; i++) t.is(await send(`during-${i}`), 200);
  await eventually('90 records stored', async () => (await metric(first, 'auditmesh_collector_records_stored_total')) >= 90);
  await eventually('exports failing', async () => (await metric(first, 'auditmesh_collector_export_failures_total', { reason: 'export' })) > 0);
  await eventually('lag reported', async () => (await metric(first, 'auditmesh_collector_export_lag_records')) >= 60);
  t.true((await metric(first, 'auditmesh_collector_export_lag_seconds')) >= 0);
  const stored = await storedRecords(first);
  await first.close();

  // A new collector on the same store: the cursor says where the receiver stopped.
  const second = await collectorExportingTo(t, receiver, 'http/protobuf', first.storeDir);
  t.true((await metric(second, 'auditmesh_collector_export_lag_records')) >= 60, 'the lag survives the restart');
  await receiver.start();
  await eventually('every stored record exported', () => stored.every((r) => receiver.logs.some((l) => l.uid === uidOf(r))));
  await eventually('the lag back to 0', async () => (await metric(second, 'auditmesh_collector_export_lag_records')) === 0);
  t.is(await metric(second, 'auditmesh_collector_export_lag_seconds'), 0);
  assertDelivered(t, stored, receiver.logs);
  for (const r of stored.filter((s) => s['audit.kind'] === 'http').slice(0, 5)) assertMapped(t, r, receiver.logs.find((l) => l.uid === uidOf(r))!);
});

test('the protocol comes from OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, then OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf; another value is refused, named', (t) => {
  t.is(otlpProtocolFrom({}), 'http/protobuf');
  t.is(otlpProtocolFrom({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }), 'grpc');
  t.is(otlpProtocolFrom({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/json' }), 'http/json');
  t.throws(() => otlpProtocolFrom({ OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'udp' }), { message: /OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: expected one of grpc, http\/protobuf, http\/json, got "udp"/ });
});

test('auditmesh collector --export-otlp takes its protocol, endpoint and headers from the OTEL_EXPORTER_OTLP_LOGS_* variables; a protocol it does not know is a usage error', async (t) => {
  const receiver = await startOtlpReceiver(t, 'http/json');
  const dir = await tempDir(t);
  const env = { ...process.env, OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_LOGS_HEADERS: 'x-audit-tenant=shop' };
  const running = startProcess(t, process.execPath, [...CLI, 'collector', '--store', join(dir, 'store'), '--grpc-port', '0', '--http-port', '0', '--insecure', '--export-otlp', '--retention', '30d'], env);
  const [, grpcAddress] = await running.waitFor(/"grpc":"(127\.0\.0\.1:\d+)"/);
  const { send } = await startShippingSidecar(t, grpcAddress);
  for (let i = 0; i < 5; i++) t.is(await send(`env-${i}`), 200);
  await eventually('records exported', () => receiver.logs.filter((l) => String(l.attributes['audit.request_id']).startsWith('env-')).length >= 5);
  t.is(receiver.lastHeaders['x-audit-tenant'], 'shop');
  t.is(receiver.lastHeaders['content-type'], 'application/json');

  const bad = startProcess(t, process.execPath, [...CLI, 'collector', '--store', join(dir, 'other'), '--insecure', '--export-otlp'], { ...process.env, OTEL_EXPORTER_OTLP_PROTOCOL: 'thrift' });
  const done = await bad.done;
  t.is(done.code, 2);
  t.regex(done.stderr, /OTEL_EXPORTER_OTLP_PROTOCOL: expected one of grpc, http\/protobuf, http\/json, got "thrift"/);
});
