// Journal benchmark: records/s through the whole audit pipeline (batching, encoding, leaf hashes
// and Merkle roots in the worker pool, chain link and Ed25519 signature per commit, LMDB), the
// main thread's event-loop utilisation while it runs, and how long a record waits from record()
// to its commit. Baseline, same run, same machine: lmdb-js writing the same bytes with no
// pipeline at all (one batch() of puts per 256 records, no hashing, no chain).
//
//   npm run bench:journal         knobs: DURATION=10 WARMUP=3 RATES=20000,50000 STRICT_IN_FLIGHT=256 POOL_THREADS=(default)
//                                 JSON_OUT=file (the rows as JSON, for bench/run.ts)
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance as perf } from 'node:perf_hooks';
import { open } from 'lmdb';
import { LMDB_WRITER_OPTIONS } from '../ledger/lmdb-writer.js';
import { createAuditPipeline, type AuditPipeline } from '../proxy/audit/pipeline.js';
import type { AuditRecord } from '../ledger/record.js';
import { loadOrCreateSigningKey } from '../ledger/keys.js';

const DURATION_S = Number(process.env.DURATION ?? 10);
const WARMUP_S = Number(process.env.WARMUP ?? 3);
const POOL_THREADS = process.env.POOL_THREADS === undefined ? undefined : Number(process.env.POOL_THREADS);
const RATES = (process.env.RATES ?? '20000,50000').split(',').filter((r) => r.trim() !== '').map(Number);
const STRICT_IN_FLIGHT = Number(process.env.STRICT_IN_FLIGHT ?? 256);
/** Saturation runs keep at most this many records handed over and not yet committed. */
const MAX_UNCOMMITTED = 50_000;
const CHUNK = 500;
const LAG_SAMPLE_EVERY = 64;

/** A record shaped like the sidecar's for an inbound GET with a few headers: about 900 bytes of JSON. */
function makeRecord(i: number): AuditRecord {
  return {
    'audit.kind': 'http',
    'audit.phase': 'final',
    'audit.direction': 'inbound',
    'audit.service': 'checkout',
    'peer.service': 'frontend',
    'audit.start_unix_ms': Date.now(),
    'network.protocol.name': 'http',
    'network.protocol.version': '1.1',
    'client.address': '10.12.3.45',
    'client.port': 40000 + (i % 20000),
    'http.request.method': 'GET',
    'url.scheme': 'http',
    'url.path': `/api/v1/orders/${i}/items`,
    'url.query': 'page=2&limit=50',
    'http.request.header': { accept: 'application/json', 'user-agent': 'frontend/2.4.1 (node)', authorization: 'hmac-sha256:4f9c2b0d8e7a61c35b2e9f0a1d3c4b5a' },
    'trace.id': '4bf92f3577b34da6a3ce929d0e0e4736',
    'span.id': '00f067aa0ba902b7',
    'audit.request_id': `req-${i}`,
    'server.address': '127.0.0.1',
    'server.port': 8080,
    'audit.duration_ms': 3.217,
    'audit.ttfb_ms': 2.904,
    'http.response.status_code': 200,
    'http.request.body.size': 0,
    'http.response.body.size': 1834,
    'http.response.header': { 'content-type': 'application/json' },
  };
}

/** One run's numbers; bench/run.ts reads these from JSON_OUT. */
export interface JournalRow {
  run: string;
  /** Records handed over per second, where the offered rate is fixed: below it, the producer fell behind. */
  handedPerS?: number;
  recordsPerS: number;
  elu: number;
  cores: number;
  lag?: { p50: number; p99: number; max: number; label: string };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Watches commits land: polls the journal's batch headers every event-loop turn (from a 1 ms
 * interval) and turns sampled handed-over times into record()-to-commit lags. Records commit in
 * the order they are handed over, so record n (from 1) gets seq n.
 */
function watchCommits(pipeline: AuditPipeline) {
  let committed = 0;
  let nextBatch = 1;
  const handedAt = new Float64Array(64 * 1024 * 1024 / LAG_SAMPLE_EVERY);
  const lags: number[] = [];
  const timer = setInterval(() => {
    const now = performance.now();
    for (const h of pipeline.readBatches({ fromBatch: nextBatch })) {
      nextBatch = h.batch + 1;
      if (h.kind !== 'records') continue;
      const last = h.first_seq + h.count - 1;
      for (let s = Math.ceil(h.first_seq / LAG_SAMPLE_EVERY) * LAG_SAMPLE_EVERY; s <= last; s += LAG_SAMPLE_EVERY) {
        const at = handedAt[s / LAG_SAMPLE_EVERY];
        if (at > 0) lags.push(now - at);
      }
      committed = last;
    }
  }, 1);
  return {
    get committed() {
      return committed;
    },
    handed(seq: number) {
      if (seq % LAG_SAMPLE_EVERY === 0) handedAt[seq / LAG_SAMPLE_EVERY] = performance.now();
    },
    lags,
    stop: () => clearInterval(timer),
  };
}

function percentiles(values: number[], label: string): JournalRow['lag'] {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? NaN, label };
}

/** Measures `body` over DURATION after WARMUP: committed records/s, main-thread ELU, CPU cores used. */
async function measure(run: string, committed: () => number, body: (until: number) => Promise<void>): Promise<JournalRow> {
  const warmEnd = performance.now() + WARMUP_S * 1000;
  const end = warmEnd + DURATION_S * 1000;
  const done = body(end);
  while (performance.now() < warmEnd) await new Promise((resolve) => setTimeout(resolve, 10));
  const [c0, e0, cpu0, t0] = [committed(), perf.eventLoopUtilization(), process.cpuUsage(), performance.now()];
  await done;
  const [c1, e1, cpu1, t1] = [committed(), perf.eventLoopUtilization(e0), process.cpuUsage(cpu0), performance.now()];
  const seconds = (t1 - t0) / 1000;
  return { run, recordsPerS: (c1 - c0) / seconds, elu: e1.utilization, cores: (cpu1.user + cpu1.system) / 1e6 / seconds };
}

async function withPipeline<T>(use: (pipeline: AuditPipeline) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-journal-'));
  const signingKey = await loadOrCreateSigningKey(join(dir, 'sidecar.key'));
  const pipeline = await createAuditPipeline({ journalDir: join(dir, 'journal'), signingKey, poolThreads: POOL_THREADS });
  try {
    return await use(pipeline);
  } finally {
    await pipeline.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** async, as fast as the pipeline takes it: records handed over in chunks, at most MAX_UNCOMMITTED ahead. */
function asyncSaturated(): Promise<JournalRow> {
  return withPipeline(async (pipeline) => {
    const watch = watchCommits(pipeline);
    let handed = 0;
    const row = await measure('async, saturated', () => watch.committed, async (until) => {
      while (performance.now() < until) {
        // At the cap, wait rather than spin: a spinning loop would count as event-loop work.
        if (handed - watch.committed >= MAX_UNCOMMITTED) await new Promise((resolve) => setTimeout(resolve, 1));
        else {
          for (let i = 0; i < CHUNK; i++) pipeline.record(makeRecord(++handed));
          await tick();
        }
      }
    });
    watch.stop();
    // No lag here: with the producer always ahead, it is only the in-flight cap over the rate.
    return row;
  });
}

/** async at a fixed offered rate: the commit lag a sidecar with that much traffic would see. */
function asyncPaced(rate: number): Promise<JournalRow> {
  return withPipeline(async (pipeline) => {
    const watch = watchCommits(pipeline);
    let handed = 0;
    let windowHanded = 0;
    const row = await measure(`async, ${rate.toLocaleString('en')}/s offered`, () => watch.committed, async (until) => {
      const t0 = performance.now();
      const windowStart = until - DURATION_S * 1000;
      // At most 2 ms worth per turn: a producer that caught up on a backlog in one synchronous
      // burst would starve the commits it is waiting for. Falling behind shows as `handed/s`.
      const burst = Math.max(1, Math.ceil(rate / 500));
      while (performance.now() < until) {
        const due = Math.min(Math.floor(((performance.now() - t0) / 1000) * rate), handed + burst);
        const counting = performance.now() >= windowStart;
        while (handed < due) {
          pipeline.record(makeRecord(++handed));
          watch.handed(handed);
          if (counting) windowHanded++;
        }
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    });
    watch.stop();
    // Only lags from the measured window: the warm-up's first commits also grow the file.
    return { ...row, handedPerS: windowHanded / DURATION_S, lag: percentiles(watch.lags.slice(Math.floor(watch.lags.length * (WARMUP_S / (WARMUP_S + DURATION_S)))), 'record() to commit') };
  });
}

/** strict: STRICT_IN_FLIGHT callers, each waiting for its record to be flushed before the next. */
function strict(): Promise<JournalRow> {
  return withPipeline(async (pipeline) => {
    let durable = 0;
    const latencies: number[] = [];
    const row = await measure(`strict, ${STRICT_IN_FLIGHT} in flight`, () => durable, async (until) => {
      const windowStart = until - DURATION_S * 1000;
      await Promise.all(
        Array.from({ length: STRICT_IN_FLIGHT }, async (_, w) => {
          for (let i = 0; performance.now() < until; i++) {
            const t0 = performance.now();
            await pipeline.recordDurable(makeRecord(w * 1e6 + i));
            durable++;
            if (t0 >= windowStart) latencies.push(performance.now() - t0);
          }
        }),
      );
    });
    return { ...row, lag: percentiles(latencies, 'recordDurable() to flushed') };
  });
}

/** Baseline: the same bytes written by lmdb-js directly, 256 puts per batch(), up to 8 batches in flight. */
async function lmdbBaseline(): Promise<JournalRow> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-lmdb-'));
  const env = open({ path: dir, ...LMDB_WRITER_OPTIONS });
  const records = env.openDB<Buffer, number>('records', { encoding: 'binary', compression: false });
  const bytes = Array.from({ length: 256 }, (_, i) => Buffer.from(JSON.stringify(makeRecord(i))));
  let committed = 0;
  let seq = 0;
  try {
    return await measure('baseline: lmdb-js puts, no pipeline', () => committed, async (until) => {
      const inFlight = new Set<Promise<unknown>>();
      while (performance.now() < until) {
        while (inFlight.size < 8) {
          const first = seq;
          seq += 256;
          const p = env.batch(() => {
            for (let i = 0; i < 256; i++) void records.put(first + i, bytes[i]);
          });
          const settled = p.then(() => (committed += 256)).finally(() => inFlight.delete(settled));
          inFlight.add(settled);
        }
        await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
    });
  } finally {
    await env.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const fmt = (n: number, digits = 0): string => (Number.isFinite(n) ? n.toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '-');

async function main(): Promise<void> {
  process.stdout.write(`journal benchmark: ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, ${DURATION_S} s per run after ${WARMUP_S} s warm-up, sealing threads ${POOL_THREADS ?? 'default'}, load average ${loadavg()[0].toFixed(1)}\n\n`);
  const baseline = await lmdbBaseline();
  const rows: JournalRow[] = [baseline, await asyncSaturated()];
  for (const rate of RATES) rows.push(await asyncPaced(rate));
  rows.push(await strict());
  const header = ['run', 'handed/s', 'records/s', 'vs baseline', 'main ELU', 'main µs/record', 'CPU cores', 'latency p50 / p99 / max ms', 'latency of'];
  const lines = rows.map((r) => [
    r.run,
    r.handedPerS === undefined ? '-' : fmt(r.handedPerS),
    fmt(r.recordsPerS),
    r === baseline ? '1.00' : fmt(r.recordsPerS / baseline.recordsPerS, 2),
    fmt(r.elu, 2),
    fmt((r.elu * 1e6) / r.recordsPerS, 1),
    fmt(r.cores, 2),
    r.lag === undefined ? '-' : `${fmt(r.lag.p50, 1)} / ${fmt(r.lag.p99, 1)} / ${fmt(r.lag.max, 1)}`,
    r.lag?.label ?? '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  for (const line of [header, ...lines]) process.stdout.write(line.map((cell, i) => (i === 0 || i === header.length - 1 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ') + '\n');
  process.stdout.write(`\nmain ELU and µs/record include building the records, as the proxy's hot path would; load average at the end: ${loadavg().map((l) => l.toFixed(1)).join(' ')}\n`);
  if (process.env.JSON_OUT) await writeFile(process.env.JSON_OUT, JSON.stringify({ rows, DURATION_S, WARMUP_S, RATES, STRICT_IN_FLIGHT }, null, 2));
}

await main();
