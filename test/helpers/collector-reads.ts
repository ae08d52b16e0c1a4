import type { CollectedRecord } from '../../control/collector/api/record-query.js';
import type { TestCollector } from './collector.js';
import { metricValue } from './sidecar.js';

/** A collector metric's value, from its /metrics (over HTTPS trusting the mesh CA when it serves so). */
export async function metric(c: TestCollector, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue(await (await c.get('/metrics')).text(), name, labels);
}

/** Every record the collector holds (up to 10,000), newest first. */
export async function storedRecords(c: TestCollector): Promise<CollectedRecord[]> {
  const res = await fetch(`${c.httpUrl}/v1/records?limit=10000`, c.readAuth);
  return (await res.text())
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as CollectedRecord);
}
