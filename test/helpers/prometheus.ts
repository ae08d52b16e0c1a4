import { execFile, execFileSync } from 'node:child_process';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { stringify } from 'yaml';
import { startProcess } from './child.js';
import { closeServer } from './net.js';
import { tempDir } from './sidecar.js';

export const PROMETHEUS = 'prometheus';
export const PROMTOOL = 'promtool';
export const ALERTMANAGER = 'prometheus-alertmanager';

function missing(commands: readonly string[]): string[] {
  return commands.filter((c) => {
    try {
      execFileSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
}

/**
 * True when Prometheus' binaries are here. Without them the test fails under CI (CI=true, where
 * .ci/run installs them) and elsewhere ends with zero assertions and the reason logged.
 */
export function requirePrometheus(t: ExecutionContext, commands: readonly string[] = [PROMETHEUS, PROMTOOL, ALERTMANAGER]): boolean {
  const absent = missing(commands);
  if (absent.length === 0) return true;
  const reason = `missing ${absent.join(', ')} (Debian: apt-get install prometheus prometheus-alertmanager)`;
  if (process.env.CI === 'true') t.fail(`Prometheus test cannot run under CI: ${reason}`);
  else {
    t.log(`NOT RUN: ${reason}. CI installs them.`);
    t.plan(0);
  }
  return false;
}

/** promtool with arguments (and stdin); its exit code and output, never a throw. */
export async function promtool(args: string[], stdin?: string): Promise<{ code: number; output: string }> {
  const child = execFile(PROMTOOL, args);
  const done = new Promise<{ code: number; output: string }>((resolve) => {
    let output = '';
    child.stdout!.on('data', (c) => (output += c));
    child.stderr!.on('data', (c) => (output += c));
    child.on('close', (code) => resolve({ code: code ?? -1, output }));
  });
  child.stdin!.end(stdin ?? '');
  return done;
}

/** A free port on 127.0.0.1 (Prometheus and Alertmanager do not report the port they bound for :0). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await closeServer(server);
  return port;
}

async function ready(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await fetch(url).then((r) => r.ok, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${url} not ready within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface Prometheus {
  url: string;
  /** An instant query's result vector. */
  query(expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>>;
  alerts(): Promise<Array<{ labels: Record<string, string>; annotations: Record<string, string>; state: string }>>;
}

/** Prometheus on a free port with `config` (prometheus.yml as an object), its TSDB in a temp folder; stopped when the test ends. */
export async function startPrometheus(t: ExecutionContext, config: Record<string, unknown>): Promise<Prometheus> {
  const dir = await tempDir(t, 'auditmesh-prometheus-');
  const configFile = join(dir, 'prometheus.yml');
  await writeFile(configFile, stringify(config));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // Resend firing alerts every second (default 1m), so one Alertmanager missed at start-up does not cost a minute.
  const p = startProcess(t, PROMETHEUS, [`--config.file=${configFile}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--rules.alert.resend-delay=1s', '--log.level=warn']);
  t.teardown(() => void p.child.kill('SIGTERM'));
  await ready(`${url}/-/ready`, 30_000);
  const api = async <T>(path: string): Promise<T> => {
    const body = (await (await fetch(`${url}${path}`)).json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`${path}: ${body.error}`);
    return body.data;
  };
  return {
    url,
    query: async (expr) => (await api<{ result: Array<{ metric: Record<string, string>; value: [number, string] }> }>(`/api/v1/query?query=${encodeURIComponent(expr)}`)).result,
    alerts: async () => (await api<{ alerts: Array<{ labels: Record<string, string>; annotations: Record<string, string>; state: string }> }>('/api/v1/alerts')).alerts,
  };
}

/** An alert as Alertmanager posts it to a webhook. */
export interface NotifiedAlert {
  status: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** A webhook receiver (a real HTTP server) and the Alertmanager that notifies it; both stopped when the test ends. */
export async function startAlertmanager(t: ExecutionContext): Promise<{ address: string; received: NotifiedAlert[]; next(pred: (a: NotifiedAlert) => boolean, timeoutMs: number): Promise<NotifiedAlert> }> {
  const received: NotifiedAlert[] = [];
  const waiters = new Set<() => void>();
  const hook = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push(...(JSON.parse(body) as { alerts: NotifiedAlert[] }).alerts);
      waiters.forEach((w) => w());
      res.end();
    });
  });
  await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
  t.teardown(() => closeServer(hook));
  const dir = await tempDir(t, 'auditmesh-alertmanager-');
  const configFile = join(dir, 'alertmanager.yml');
  const hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/`;
  await writeFile(configFile, stringify({ route: { receiver: 'test', group_by: ['alertname'], group_wait: '0s', group_interval: '1s', repeat_interval: '1h' }, receivers: [{ name: 'test', webhook_configs: [{ url: hookUrl, send_resolved: false }] }] }));
  const port = await freePort();
  const am = startProcess(t, ALERTMANAGER, [`--config.file=${configFile}`, `--storage.path=${dir}`, `--web.listen-address=127.0.0.1:${port}`, '--cluster.listen-address=', '--log.level=warn']);
  t.teardown(() => void am.child.kill('SIGTERM'));
  await ready(`http://127.0.0.1:${port}/-/ready`, 30_000);
  return {
    address: `127.0.0.1:${port}`,
    received,
    next(pred, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = received.find(pred);
          if (found === undefined) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
        };
        const timer = setTimeout(() => (waiters.delete(check), reject(new Error(`no matching alert at the webhook within ${timeoutMs} ms; got ${received.map((a) => a.labels.alertname).join(', ')}`))), timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}

/** Polls until `check` returns a value (not undefined), or fails naming `what`. */
export async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
