// The report's other sections (gRPC, journal, collector ingest) are benchmarks of their own with
// their own entry points; the report runs each as a child process and reads the rows it writes
// to JSON_OUT, so `npm run bench:grpc` and the report measure the same way.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnPinned } from './children.js';
import type { GrpcRow } from './grpc.js';
import type { JournalRow } from './journal.js';
import type { Knobs } from './knobs.js';

export type ScriptRun<T> = { ok: true; data: T; stdout: string } | { ok: false; error: string; stdout: string };

const script = (name: string): string => fileURLToPath(new URL(`./${name}`, import.meta.url));

/**
 * Runs bench/<name> with the given environment; its stdout is kept, its stderr passes through.
 * With `rows`, the script must also write its rows as JSON to JSON_OUT.
 */
async function runScript<T>(name: string, env: Record<string, string>, rows = true): Promise<ScriptRun<T>> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-section-'));
  const jsonOut = join(dir, 'rows.json');
  try {
    const child = spawnPinned(null, [process.execPath, '--import=tsx', script(name)], 'pipe', { ...process.env, ...env, JSON_OUT: jsonOut });
    let stdout = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    const code = await new Promise<number | null>((resolve) => {
      child.once('error', () => resolve(null));
      child.once('close', resolve);
    });
    if (code !== 0) return { ok: false, error: `${name} exited with ${code}`, stdout };
    if (!rows) return { ok: true, data: null as T, stdout };
    try {
      return { ok: true, data: JSON.parse(await readFile(jsonOut, 'utf8')) as T, stdout };
    } catch (err) {
      return { ok: false, error: `${name} wrote no readable JSON_OUT: ${(err as Error).message}`, stdout };
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The paired benchmark (bench/paired.ts): the audited sidecar against bare http-proxy in
 * alternating slices, the measure that judges issue 2's target on a machine whose speed drifts.
 * It prints its own lines and writes no JSON: the report quotes what it printed.
 */
export function runPairedSection(knobs: Knobs): Promise<ScriptRun<null>> {
  return runScript(
    'paired.ts',
    { PAIRS: String(knobs.pairs), SLICE: String(knobs.sliceS), CONNECTIONS: String(knobs.connections), PIN: knobs.pin ? '1' : '0', SERVERS_FROM: knobs.serversFrom },
    false,
  );
}

export function runGrpcSection(knobs: Knobs): Promise<ScriptRun<{ rows: GrpcRow[] }>> {
  return runScript('grpc.ts', {
    DURATION: String(knobs.grpcDurationS),
    STREAM_MESSAGES: String(knobs.grpcStreamMessages),
    PIN: knobs.pin ? '1' : '0',
    SERVERS_FROM: knobs.serversFrom,
  });
}

export function runJournalSection(knobs: Knobs): Promise<ScriptRun<{ rows: JournalRow[] }>> {
  return runScript('journal.ts', {
    DURATION: String(knobs.journalDurationS),
    WARMUP: String(Math.min(2, knobs.journalDurationS)),
    RATES: String(knobs.journalRate),
  });
}

/**
 * The collector's ingest benchmark (bench/ingest.ts), where it exists (null where it does not).
 * It prints its own table and writes no JSON: the report quotes what it printed.
 */
export function runIngestSection(knobs: Knobs): Promise<ScriptRun<null>> | null {
  if (!existsSync(script('ingest.ts'))) return null;
  // One round a run: the report repeats each section in rounds of its own.
  return runScript('ingest.ts', { RECORDS: String(knobs.ingestRecords), ROUNDS: '1' }, false);
}
