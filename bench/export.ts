// OTLP export benchmark: records/s the collector exports (--export-otlp, http/protobuf) against
// records/s it ingests, in the same run: first ingest alone into a fresh collector, then the same
// streams into another fresh collector exporting to a local receiver (which accepts and counts
// bytes, as a fast OTLP intake would); the export keeps up when it finishes soon after ingest does.
//
//   npm run bench:export      knobs: STREAMS=2 RECORDS=50000 (per stream), and bench/ingest.ts's BATCH, SEGMENT, WINDOW
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatTable } from './table.js';

process.env.STREAMS ??= '2';
process.env.RECORDS ??= '50000';
const STREAMS = Number(process.env.STREAMS);
const { buildStream, shipGrpcJs } = await import('./ingest.js');
const { startCollector } = await import('./collector-process.js');

/** A receiver that accepts every export request and counts its bytes. */
async function startReceiver(): Promise<{ url: string; requests: () => number; bytes: () => number; close(): Promise<void> }> {
  let requests = 0;
  let bytes = 0;
  const server = http.createServer((req, res) => {
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/v1/logs`, requests: () => requests, bytes: () => bytes, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

async function metric(httpUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

interface Run {
  ingestS: number;
  exportS?: number;
  maxLag?: number;
}

async function run(dir: string, total: number, exportUrl: string | undefined): Promise<Run> {
  if (exportUrl === undefined) delete process.env.EXPORT_OTLP_URL;
  else process.env.EXPORT_OTLP_URL = exportUrl;
  const collector = await startCollector(join(dir, exportUrl === undefined ? 'alone' : 'exporting'));
  try {
    const streams = Array.from({ length: STREAMS }, (_, s) => buildStream(s));
    let maxLag = 0;
    let sampling = exportUrl !== undefined;
    const sampler = (async () => {
      while (sampling) {
        maxLag = Math.max(maxLag, await metric(collector.http, 'auditmesh_collector_export_lag_records'));
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    const started = performance.now();
    await Promise.all(streams.map((s) => shipGrpcJs(collector.address, s)));
    const ingestS = (performance.now() - started) / 1000;
    if (exportUrl === undefined) return { ingestS };
    while ((await metric(collector.http, 'auditmesh_collector_exported_records_total')) < total) await new Promise((resolve) => setTimeout(resolve, 20));
    const exportS = (performance.now() - started) / 1000;
    sampling = false;
    await sampler;
    return { ingestS, exportS, maxLag };
  } finally {
    await collector.stop();
  }
}

const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-export-'));
const receiver = await startReceiver();
try {
  const total = STREAMS * Number(process.env.RECORDS);
  const alone = await run(dir, total, undefined);
  const exporting = await run(dir, total, receiver.url);
  const rate = (s: number): string => Math.round(total / s).toLocaleString('en');
  process.stdout.write(
    formatTable(
      ['measured', 'records/s', 'ratio'],
      [
        ['ingest alone (baseline)', rate(alone.ingestS), '1.00'],
        ['ingest while exporting', rate(exporting.ingestS), (alone.ingestS / exporting.ingestS).toFixed(2)],
        ['export (first record stored to last accepted)', rate(exporting.exportS!), (alone.ingestS / exporting.exportS!).toFixed(2)],
      ],
    ) + '\n',
  );
  process.stdout.write(`${total.toLocaleString('en')} records (${STREAMS} streams); the export finished ${(exporting.exportS! - exporting.ingestS).toFixed(1)} s after ingest, its lag at most ${exporting.maxLag!.toLocaleString('en')} records; ${receiver.requests()} export requests, ${(receiver.bytes() / total).toFixed(0)} bytes a record on the wire; ${availableParallelism()} CPUs, load average ${loadavg()[0].toFixed(1)}\n`);
} finally {
  await receiver.close();
  await rm(dir, { recursive: true, force: true });
}
