// Entry: `npm run bench` (node --import=tsx bench/run.ts). The HTTP/1.1 throughput benchmark:
// every path measured in this one run on this machine, one table of ratios, raw results as JSON.
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { type LoadChild, type Pinning, choosePinning, startLoadChild } from './children.js';
import { type Knobs, type PathName, readKnobs } from './knobs.js';
import { type Measurement, REQUEST, measurePath } from './measure.js';
import { formatTable } from './table.js';
import { waitForQuiet } from './quiet.js';

const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
const THROUGHPUT_TARGET = 0.9;
// A 1-minute load average above this on an idle machine means other work is competing.
const BUSY_LOAD_AVERAGE = 1;

type Outcome = { runs: Measurement[]; failure?: string };

/** With REPEAT > 1, the run with the median req/s stands for the path (its latencies included). */
function medianRun(runs: readonly Measurement[]): Measurement | undefined {
  const sorted = [...runs].sort((a, b) => a.rps - b.rps);
  return sorted[Math.floor(sorted.length / 2)];
}

const fixed = (n: number | null | undefined, digits: number): string => (n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits));
const ratio = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined || b === 0 ? '-' : (a / b).toFixed(2));
const percent = (a: number, b: number): string => `${((a / b) * 100).toFixed(1)}%`;

function renderTable(outcomes: ReadonlyMap<PathName, Outcome>): string {
  const median = (p: PathName): Measurement | undefined => medianRun(outcomes.get(p)?.runs ?? []);
  const direct = median('direct')?.rps;
  const reference = median('http-proxy')?.rps;
  const header = ['path', 'req/s', 'vs direct', 'vs http-proxy', 'p50 ms', 'p99 ms', 'errors', 'cpu µs/req', 'main thread µs/req', 'peak RSS MB', 'other cpu %'];
  const rows = [...outcomes].map(([path, outcome]) => {
    const m = medianRun(outcome.runs);
    if (m === undefined) return [path, 'failed', ...header.slice(2).map(() => '-')];
    return [
      path,
      fixed(m.rps, 0),
      ratio(m.rps, direct),
      ratio(m.rps, reference),
      fixed(m.latencyP50Ms, 1),
      fixed(m.latencyP99Ms, 1),
      String(m.errors + m.non2xx),
      fixed(m.serverCpuUsPerReq, 1),
      fixed(m.serverMainThreadCpuUsPerReq, 1),
      fixed(m.serverPeakRssBytes === null ? null : m.serverPeakRssBytes / 2 ** 20, 0),
      fixed(m.otherCpuPercent, 0),
    ];
  });
  return formatTable(header, rows);
}

function targetChecks(outcomes: ReadonlyMap<PathName, Outcome>): string[] {
  const rps = (p: PathName): number | undefined => medianRun(outcomes.get(p)?.runs ?? [])?.rps;
  const on = rps('sidecar-async');
  const reference = rps('http-proxy');
  const off = rps('sidecar-off');
  const bare = rps('sidecar-async-no-metrics');
  return [
    on === undefined || reference === undefined
      ? 'auditing on vs http-proxy: n/a (needs sidecar-async and http-proxy)'
      : `auditing on vs http-proxy: ${percent(on, reference)} of throughput (target >= ${THROUGHPUT_TARGET * 100}%)`,
    on === undefined || off === undefined ? 'auditing on vs auditing off: n/a (needs sidecar-async and sidecar-off)' : `auditing on vs auditing off: ${percent(on, off)}`,
    on === undefined || bare === undefined
      ? 'metrics and alerts on vs off: n/a (needs sidecar-async and sidecar-async-no-metrics)'
      : `metrics and alerts on vs off: ${percent(on, bare)} of throughput`,
  ];
}

async function measureAll(knobs: Knobs, pinning: Pinning, loader: LoadChild, nodeFlags: string[]): Promise<Map<PathName, Outcome>> {
  const outcomes = new Map<PathName, Outcome>(knobs.paths.map((p) => [p, { runs: [] }]));
  // Rounds interleave the paths, so slow drift on the machine spreads over all of them.
  for (let round = 1; round <= knobs.repeat; round++) {
    for (const path of knobs.paths) {
      const outcome = outcomes.get(path)!;
      if (outcome.failure !== undefined) continue;
      process.stderr.write(`[${round}/${knobs.repeat}] ${path} ...`);
      try {
        if (knobs.quietWaitS > 0) {
          const { quiet, busyPercent } = await waitForQuiet(knobs.quietWaitS * 1000);
          if (!quiet) process.stderr.write(` (machine still ${busyPercent?.toFixed(0)}% busy after ${knobs.quietWaitS}s, going ahead)`);
        }
        const m = await measurePath(path, loader, knobs, pinning, nodeFlags);
        outcome.runs.push(m);
        process.stderr.write(` ${m.rps.toFixed(0)} req/s\n`);
      } catch (err) {
        outcome.failure = `round ${round}: ${(err as Error).message}`;
        process.stderr.write(` failed: ${outcome.failure}\n`);
      }
    }
  }
  return outcomes;
}

async function main(): Promise<void> {
  const knobs = readKnobs(process.env);
  const pinning = choosePinning(knobs.pin);
  const nodeFlags = knobs.profile ? ['--cpu-prof', `--cpu-prof-dir=${RESULTS_DIR}profiles`] : [];
  const machine = { nproc: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', node: process.version, kernel: `${os.type()} ${os.release()}` };
  const started = new Date();
  console.log(`HTTP/1.1 throughput, ${started.toISOString()}`);
  console.log(`${machine.nproc} CPUs (${machine.cpu}), node ${machine.node}; ${pinning.note}`);
  const [load1] = os.loadavg();
  if (load1 !== undefined && load1 > BUSY_LOAD_AVERAGE) console.log(`warning: load average ${load1.toFixed(1)} before start: other work is running; see the "other cpu %" column`);
  console.log(
    `DURATION=${knobs.durationS}s WARMUP=${knobs.warmupS}s CONNECTIONS=${knobs.connections} PIPELINING=${knobs.pipelining} REPEAT=${knobs.repeat} QUIET_WAIT=${knobs.quietWaitS}s; ` +
      `${REQUEST.method} ${REQUEST.path}, ${Object.keys(REQUEST.headers).join(' + ')} headers`,
  );

  const loader = startLoadChild(pinning.load);
  let outcomes: Map<PathName, Outcome>;
  try {
    outcomes = await measureAll(knobs, pinning, loader, nodeFlags);
  } finally {
    await loader.close();
  }

  console.log('\n' + renderTable(outcomes) + '\n');
  for (const [path, { failure }] of outcomes) if (failure !== undefined) console.log(`${path} failed: ${failure}`);
  const checks = targetChecks(outcomes);
  for (const line of checks) console.log(line);

  await mkdir(RESULTS_DIR, { recursive: true });
  const file = `${RESULTS_DIR}http-${started.toISOString().replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')}.json`;
  const paths = Object.fromEntries([...outcomes].map(([p, o]) => [p, { ...o, median: medianRun(o.runs) ?? null }]));
  await writeFile(file, JSON.stringify({ date: started.toISOString(), machine, knobs, pinning, request: REQUEST, paths, checks }, null, 2) + '\n');
  console.log(`\nraw results: ${file}`);
  if ([...outcomes.values()].some((o) => o.failure !== undefined)) process.exitCode = 1;
}

await main();
