import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { localMonitoring } from '../control/demo/local-prometheus.js';
import { serviceNames } from '../control/collector/ingest/serving-identity.js';
import { createTokenIssuer, startIdentityCollector } from './helpers/identity.js';
import { createTestMeshCa } from './helpers/mesh-ca.js';
import { requirePrometheus, startPrometheus, until, PROMETHEUS } from './helpers/prometheus.js';
import { tempDir } from './helpers/sidecar.js';

type Job = { job_name: string; scheme?: string; tls_config?: { ca_file?: string; server_name?: string }; static_configs: Array<{ labels: Record<string, string> }> };

test("a real Prometheus scrapes the collector's /metrics over HTTPS as the rendered ServiceMonitor says: trusting the mesh CA for the Service's name, and not with another CA", async (t) => {
  if (!requirePrometheus(t, [PROMETHEUS])) return;
  // A collector with a mesh CA, its serving certificate naming the Service in auditmesh-system as the install's does.
  const collector = await startIdentityCollector(t, await createTokenIssuer(), { identity: { caDir: join(await tempDir(t), 'ca'), createCa: true, serviceDns: serviceNames('auditmesh-system') } });
  t.true(collector.httpUrl.startsWith('https://'), collector.httpUrl);
  const settings = { scrapeInterval: '500ms', evaluationInterval: '500ms', rulesFile: join(await tempDir(t), 'rules.yml') };
  const { config } = await localMonitoring({ sidecars: [], collectorHttpPort: collector.httpPort, collectorCaFile: collector.caFile! }, settings);
  const jobs = config.scrape_configs as Job[];
  const collectorJob = jobs.find((j) => j.static_configs.some((g) => g.labels.endpoint === 'http'))!;
  t.like(collectorJob, { scheme: 'https', tls_config: { ca_file: collector.caFile!, server_name: 'auditmesh-collector.auditmesh-system.svc' } });

  // The same job trusting a CA that did not issue the collector's certificate: the scrape must fail.
  const otherCaFile = join(await tempDir(t), 'other-ca.crt');
  await writeFile(otherCaFile, (await createTestMeshCa('another CA')).pem);
  const untrusted: Job = { ...collectorJob, job_name: 'untrusted', tls_config: { ...collectorJob.tls_config, ca_file: otherCaFile }, static_configs: collectorJob.static_configs.map((g) => ({ ...g, labels: { ...g.labels, job: 'untrusted' } })) };
  const prometheus = await startPrometheus(t, { ...config, scrape_configs: [...jobs, untrusted] });

  const up = await until('the collector scraped', 30_000, async () => {
    const r = await prometheus.query('up{endpoint="http"}');
    return r.length === 2 ? Object.fromEntries(r.map((s) => [s.metric.job!, s.value[1]])) : undefined;
  });
  t.deepEqual(up, { 'auditmesh-collector': '1', untrusted: '0' });
  t.true((await prometheus.query('{job="auditmesh-collector", __name__=~"auditmesh_collector_.+"}')).length > 0, "the collector's own series, scraped over HTTPS");
});
