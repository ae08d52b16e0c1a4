import type { Container, Probe } from './pod-fields.js';
import type { NodeRequest } from './node-agent.js';

export type ProbeKind = 'startup' | 'readiness' | 'liveness';

/** What the kubelet saw of one declared probe. */
export interface ProbeRecord {
  container: string;
  kind: ProbeKind;
  passed: number;
  failed: number;
  /** Failures after its first pass (a container not yet listening fails a readiness probe, as in a cluster). */
  failedAfterPass: number;
  /** The longest run of consecutive failures after its first pass: at failureThreshold the kubelet acts (unready, restart). */
  failureRunAfterPass: number;
  /** Consecutive failures at which the kubelet acts (the probe's failureThreshold). */
  threshold: number;
  /** What the last failure said. */
  lastFailure: string;
  last: string;
}

/** One attempt of an httpGet probe from the node to the pod IP, as the kubelet makes it: 200-399 passes. */
export async function probeOnce(request: NodeRequest, podIp: string, c: Container, probe: Probe): Promise<{ ok: boolean; detail: string }> {
  const get = probe.httpGet;
  if (get === undefined) throw new Error(`container ${c.name}: only httpGet probes are supported by the harness`);
  const port = typeof get.port === 'number' ? get.port : c.ports?.find((p) => p.name === get.port)?.containerPort;
  if (port === undefined) throw new Error(`container ${c.name}: probe port ${String(get.port)} is not a declared port name`);
  const scheme = get.scheme === 'HTTPS' ? 'https' : 'http';
  const answer = await request(`${scheme}://${podIp}:${port}${get.path ?? '/'}`, { timeoutMs: (probe.timeoutSeconds ?? 1) * 1000 });
  const ok = answer.status !== undefined && answer.status >= 200 && answer.status < 400;
  return { ok, detail: answer.error ?? `HTTP ${answer.status}` };
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });

/**
 * Runs a probe at its declared period. `until: 'pass'` (startup) resolves at the first success and
 * rejects after failureThreshold consecutive failures; `until: 'stopped'` (readiness, liveness)
 * goes on until the signal aborts, calling onPass at the first success.
 */
export async function runProbe(request: NodeRequest, podIp: string, c: Container, kind: ProbeKind, probe: Probe, record: ProbeRecord, signal: AbortSignal, onPass?: () => void): Promise<void> {
  await sleep((probe.initialDelaySeconds ?? 0) * 1000, signal);
  let failures = 0;
  while (!signal.aborted) {
    const { ok, detail } = await probeOnce(request, podIp, c, probe);
    if (signal.aborted) return;
    record.last = detail;
    if (ok) {
      record.passed++;
      failures = 0;
      onPass?.();
      if (kind === 'startup') return;
    } else {
      record.failed++;
      record.lastFailure = detail;
      ++failures;
      if (record.passed > 0) {
        record.failedAfterPass++;
        record.failureRunAfterPass = Math.max(record.failureRunAfterPass, failures);
      }
      if (failures >= (probe.failureThreshold ?? 3) && kind === 'startup') throw new Error(`container ${c.name}: startup probe failed ${failures} times (${detail})`);
    }
    await sleep((probe.periodSeconds ?? 10) * 1000, signal);
  }
}
