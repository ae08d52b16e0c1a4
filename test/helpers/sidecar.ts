import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { sidecarConfig, type SidecarConfig } from '../../proxy/config.js';
import { startSidecar, type Sidecar } from '../../proxy/sidecar.js';
import type { JournalRecord } from '../../ledger/record.js';
import { takeSseEvents } from '../../control/cli/sse.js';
import type { Logger } from '../../command/log.js';

/** A temp folder removed when the test ends. */
export async function tempDir(t: ExecutionContext, prefix = 'auditmesh-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * The HTTP/1.1 engine test sidecars use: `AUDITMESH_FORWARD_ENGINE` as for the sidecar itself, so
 * one test file can run the same behaviour tests against each engine (test/http1-http-proxy-*.test.ts).
 */
function forwardEngine(): Partial<SidecarConfig> {
  const engine = process.env.AUDITMESH_FORWARD_ENGINE;
  return engine === 'undici' || engine === 'http-proxy' ? { forwardEngine: engine } : {};
}

/** A real sidecar on 127.0.0.1 with its journal in a temp folder, closed when the test ends. */
export async function startTestSidecar(t: ExecutionContext, overrides: Partial<SidecarConfig> = {}, log?: Logger): Promise<Sidecar & { dir: string }> {
  const dir = await tempDir(t);
  const sidecar = await startSidecar(
    sidecarConfig({ service: 'svc', journalDir: join(dir, 'journal'), keyFile: join(dir, 'sidecar.key'), redactionKeyFile: join(dir, 'redaction.key'), ...forwardEngine(), ...overrides }),
    log,
  );
  t.teardown(() => sidecar.close());
  return Object.assign(sidecar, { dir });
}

/**
 * Follows a sidecar's /tail over HTTP, as `auditmesh tail` does: the records a user would see.
 * `next(pred)` resolves with the first record (already seen or arriving) matching pred.
 */
export async function followTail(t: ExecutionContext, adminPort: number) {
  const records: JournalRecord[] = [];
  const waiters: Array<{ pred: (r: JournalRecord) => boolean; resolve: (r: JournalRecord) => void }> = [];
  const controller = new AbortController();
  t.teardown(() => controller.abort());
  await new Promise<void>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: adminPort, path: '/tail', signal: controller.signal }, (res) => {
      res.setEncoding('utf8');
      let buffer = '';
      res.on('data', (chunk: string) => {
        const { data, rest } = takeSseEvents(buffer + chunk);
        buffer = rest;
        for (const d of data) {
          const rec = JSON.parse(d) as JournalRecord;
          records.push(rec);
          for (const w of [...waiters]) {
            if (w.pred(rec)) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve(rec);
            }
          }
        }
      });
      res.on('error', () => {});
      resolve();
    });
    req.on('error', (err) => (controller.signal.aborted ? undefined : reject(err)));
  });
  return {
    records,
    next(pred: (r: JournalRecord) => boolean, timeoutMs = 15_000): Promise<JournalRecord> {
      const found = records.find(pred);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching record within ${timeoutMs} ms; saw ${records.length}`)), timeoutMs);
        waiters.push({ pred, resolve: (r) => (clearTimeout(timer), resolve(r)) });
      });
    },
  };
}

/** Scrapes /metrics over HTTP and returns the text. */
export async function scrape(adminPort: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: adminPort, path: '/metrics' }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve(text));
      })
      .on('error', reject);
  });
}

/** The value of one metric series in Prometheus text, or 0 if absent. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

/** Resolves once `check` holds, polling; rejects naming `what` after timeoutMs (generous: the machine is shared). */
export async function until(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await check()); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
