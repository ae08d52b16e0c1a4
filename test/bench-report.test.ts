// The benchmark report's pipeline, end to end in QUICK mode with tiny durations, so the harness
// cannot rot unnoticed. No speed is asserted: only that every part is produced and well formed.
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { XMLValidator } from 'fast-xml-parser';
import { startProcess } from './helpers/child.js';

const PATHS = ['direct', 'nginx', 'sidecar-async'];

interface Report {
  nginx: { ok: boolean; reason?: string } | null;
  http: { summaries: { path: string; failure: string | null; rps: { median: number } | null; allocKiBPerReq: { median: number } | null; workingSetMiB: { max: number } | null; anonMiB: { max: number } | null; rates: { offeredPerS: number; measured: number; skipped: string | null; p99Ms: { median: number } | null }[] }[] };
  grpc: { rounds: { rows: { path: string; unaryPerSec: number; bidiMsgsPerSec: number }[] }[]; failure: string | null };
  journal: { rounds: { rows: { run: string; recordsPerS: number }[] }[]; failure: string | null };
  ingest: { stdout: string[]; failure: string | null } | null;
  paired: { stdout: string; failure: string | null } | null;
  checks: string[];
}

test('the QUICK report prints its tables and writes well-formed JSON, SVG and text', async (t) => {
  // About 1.5 minutes alone; several times that while the whole suite loads the 2 CPUs (it compiles
  // the servers, starts a dozen processes and runs four sections).
  t.timeout(600_000);
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-report-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = {
    ...process.env,
    QUICK: '1',
    RESULTS_DIR: dir,
    PATHS: PATHS.join(','),
    // Low rates, so even a loaded machine sustains them and the chart gets its lines.
    RATES: '40,80',
    GRPC_DURATION: '1',
    STREAM_MESSAGES: '200',
    JOURNAL_DURATION: '1',
    INGEST_RECORDS: '500',
    // The ingest section's variants each cost a round: mTLS and reconciliation off are measured the
    // same way as the plain round, so one of them shows the code runs; the tier runs on one NATS node.
    WARMUP_RECORDS: '500',
    MTLS: '0',
    RECONCILE_OFF: '0',
    TIER_REPLICAS: '1',
    NATS_NODES: '1',
    // A test never installs packages: without nginx, the report must say it skipped it.
    NGINX_INSTALL: '0',
  };
  const run = startProcess(t, process.execPath, ['--import=tsx', 'bench/run.ts'], env);
  const { code, stdout, stderr } = await run.done;
  t.is(code, 0, stderr);

  const files = await readdir(dir);
  const base = files.find((f) => f.endsWith('.json'))?.replace(/\.json$/, '');
  t.truthy(base, `no JSON in ${files.join(', ')}`);
  t.deepEqual(files.filter((f) => f.startsWith(base!)).sort(), [`${base}.json`, `${base}.svg`, `${base}.txt`]);

  const report = JSON.parse(await readFile(join(dir, `${base}.json`), 'utf8')) as Report;
  const measuredPaths = report.nginx?.ok ? PATHS : PATHS.filter((p) => p !== 'nginx');
  if (!report.nginx?.ok) t.regex(stdout, /nginx skipped: /);
  t.deepEqual(
    report.http.summaries.map((s) => s.path),
    measuredPaths,
  );
  for (const s of report.http.summaries) {
    // Measured, not fast: inside the whole suite on a loaded machine a 1 s run may complete nothing.
    t.true(s.rps !== null && Number.isFinite(s.rps.median) && s.rps.median >= 0, `${s.path}: no throughput measurement (${s.failure ?? 'no failure recorded'})`);
    t.deepEqual(
      s.rates.map((r) => r.offeredPerS),
      [40, 80],
    );
    for (const r of s.rates) t.true(r.measured === 1 ? (r.p99Ms?.median ?? 0) > 0 : r.skipped !== null, `${s.path} at ${r.offeredPerS}/s: neither measured nor skipped`);
    // V8's own allocation count, read from the Node servers' --trace-gc-nvp lines (nginx has none).
    if (s.path === 'nginx') t.is(s.allocKiBPerReq, null);
    // A 1 s run on a loaded machine may see no collection at all: then it is not measured (null), never 0.
    else t.true(s.allocKiBPerReq === null || s.allocKiBPerReq.median > 0, `${s.path}: allocation read as ${s.allocKiBPerReq?.median}`);
  }
  t.true(
    report.http.summaries.some((s) => (s.allocKiBPerReq?.median ?? 0) > 0),
    'allocation measured on at least one Node server',
  );
  t.is(report.grpc.failure, null);
  t.deepEqual(report.grpc.rounds[0]?.rows.map((r) => r.path), ['direct', 'sidecar-off', 'sidecar-async']);
  t.true(report.grpc.rounds[0]!.rows.every((r) => r.unaryPerSec >= 0 && r.bidiMsgsPerSec > 0));
  t.is(report.journal.failure, null);
  t.true(report.journal.rounds[0]!.rows.length >= 3 && report.journal.rounds[0]!.rows.every((r) => Number.isFinite(r.recordsPerS)));
  // The collector's ingest benchmark is quoted as it printed, where bench/ingest.ts exists.
  if (existsSync(new URL('../bench/ingest.ts', import.meta.url))) {
    t.is(report.ingest?.failure, null);
    t.regex(report.ingest?.stdout[0] ?? '', /records\/s/);
    t.regex((report.ingest?.stdout ?? []).join('\n'), /collector tier: 1 replica\(s\), 1 NATS nodes/);
  } else t.regex(stdout, /^Collector ingest: not measured/m);
  // Memory as Kubernetes counts it, from each server's own cgroup (root here), or said not to be.
  t.true(report.checks.some((line) => /^sidecar-async working set under load: ([\d.]+ MiB \(target <= 64 MiB\)|not measured)/.test(line)));
  for (const s of report.http.summaries) {
    if (s.workingSetMiB === null) t.regex(stdout, /memory not measured in a cgroup: /);
    else t.true(s.workingSetMiB.max > 0 && s.anonMiB !== null && s.anonMiB.max > 0 && s.anonMiB.max <= s.workingSetMiB.max, `${s.path}: working set ${s.workingSetMiB.max} MiB, anon ${s.anonMiB?.max}`);
  }
  // The paired section, quoted as bench/paired.ts printed it: the target judged on the pairs.
  t.is(report.paired?.failure, null);
  t.regex(report.paired?.stdout ?? '', /^sidecar-async vs http-proxy, throughput pair by pair \(1 pairs of 1 s\): median [\d.]+x .*: (met|MISSED)/m);
  t.regex(stdout, /^Paired throughput \(bench\/paired\.ts, as printed\)/m);

  const svg = await readFile(join(dir, `${base}.svg`), 'utf8');
  t.is(XMLValidator.validate(svg), true);
  t.regex(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  // One line per path with a measured rate, in each of the two panels (p50, p99).
  const withPoints = report.http.summaries.filter((s) => s.rates.some((r) => r.measured > 0)).length;
  t.is(svg.match(/<polyline /g)?.length ?? 0, 2 * withPoints);
  for (const path of measuredPaths) t.true(svg.includes(`>${path}</text>`), `legend lacks ${path}`);

  // The printed report: the main table with a row per path, the rates, gRPC and journal tables.
  t.regex(stdout, /^path +req\/s \(min\.\.max\) +vs direct +vs nginx +p99 ms +errors +cpu µs\/req +alloc KiB\/req +GC µs\/req/m);
  for (const path of measuredPaths) t.regex(stdout, new RegExp(`^${path} +\\d`, 'm'));
  t.regex(stdout, /^path +offered\/s +done\/s +p50 ms +p99 ms +p99\.9 ms/m);
  t.regex(stdout, /^path +unary\/s/m);
  t.regex(stdout, /^run +records\/s/m);
  const text = await readFile(join(dir, `${base}.txt`), 'utf8');
  t.true(stdout.includes(text.split('\n').slice(0, 3).join('\n')), 'the .txt is not the printed report');
});
