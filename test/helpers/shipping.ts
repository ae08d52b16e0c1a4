import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { sidecarConfig, type SidecarConfig } from '../../proxy/config.js';
import { startSidecar, type Sidecar } from '../../proxy/sidecar.js';
import type { Logger } from '../../command/log.js';
import { request, startUpstream } from './net.js';
import { metricValue, scrape, tempDir } from './sidecar.js';

/** Shipper settings for tests: short timeouts and backoff so faults resolve within seconds. */
export const FAST_SHIP: SidecarConfig['ship'] = {
  windowSegments: 16,
  windowBytes: 8 * 1024 * 1024,
  welcomeTimeoutMs: 1_500,
  ackTimeoutMs: 3_000,
  keepaliveMs: 1_000,
  keepaliveTimeoutMs: 1_000,
  backoffMaxMs: 300,
};

export interface ShippingSidecar {
  sidecar: Sidecar;
  /** Journal, key and token live here; pass it again to restart the same sidecar. */
  dir: string;
  logged: string[];
  /** Sends one request through the inbound listener with x-request-id `id`; resolves with its status. */
  send(id: string): Promise<number>;
}

/**
 * A sidecar in front of a real upstream that ships to `collector`, with a token file (written
 * with a trailing newline, as Secrets often are). Reuses `dir` when given: the same sidecar again.
 */
export async function startShippingSidecar(t: ExecutionContext, collector: string, overrides: Partial<SidecarConfig> = {}, dir?: string): Promise<ShippingSidecar> {
  dir ??= await tempDir(t);
  const tokenFile = join(dir, 'token');
  await writeFile(tokenFile, 'test-token\n');
  const app = await startUpstream();
  t.teardown(app.close);
  const logged: string[] = [];
  const log: Logger = (level, msg, fields) => logged.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
  const sidecar = await startSidecar(
    sidecarConfig({
      service: 'ledger',
      sidecarId: 'ledger-0',
      appPort: app.port,
      journalDir: join(dir, 'journal'),
      keyFile: join(dir, 'sidecar.key'),
      redactionKeyFile: join(dir, 'redaction.key'),
      collector,
      collectorTokenFile: tokenFile,
      checkpointIntervalMs: 200,
      ship: FAST_SHIP,
      ...overrides,
    }),
    log,
  );
  t.teardown(() => sidecar.close());
  const send = async (id: string): Promise<number> => (await request(sidecar.ports.inbound!, { path: `/items/${id}`, headers: { 'x-request-id': id } })).status;
  return { sidecar, dir, logged, send };
}

/** Polls `check` until it returns true; fails with `what` after `timeoutMs` (generous: the machine is shared). */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** One metric of the sidecar, scraped over HTTP. */
export async function sidecarMetric(sidecar: Sidecar, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue(await scrape(sidecar.ports.admin), name, labels);
}
