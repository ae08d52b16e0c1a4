import test from 'ava';
import https from 'node:https';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseFlags } from '../command/flags.js';
import { INJECTOR_FLAGS } from '../control/cli/injector.js';
import { localMonitoring } from '../control/demo/local-prometheus.js';
import { annotatedTargets } from '../control/install/prometheus-config.js';
import { IMAGE_APP_DIR } from '../control/injector/sidecar-containers.js';
import { ROOT, runCli, runInProcess, startCli } from './helpers/child.js';
import { tempDir } from './helpers/sidecar.js';
import { schemaErrors } from './helpers/kube-schema.js';
import { parsePromQL } from './helpers/promql.js';

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; [k: string]: unknown };

async function install(args: string[]): Promise<Obj[]> {
  const r = await runInProcess(['install', '-o', 'json', ...args]);
  if (r.code !== 0) throw new Error(`auditmesh install ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Obj);
}

const find = (objects: Obj[], kind: string, name?: string): Obj => {
  const found = objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found === undefined) throw new Error(`no ${kind} ${name ?? ''} among ${objects.map((o) => o.kind).join(', ')}`);
  return found;
};

test('auditmesh install: every object of every mode validates against the Kubernetes schemas', async (t) => {
  for (const args of [[], ['--certs', 'self-signed', '--monitoring', '--mandatory-audit-policy'], ['--sidecar-mode', 'container', '--replicas', '1', '--storage-class', 'fast-ssd']]) {
    const objects = await install(args);
    t.deepEqual(objects.map(schemaErrors).filter((e) => e !== null), [], args.join(' '));
  }
  const kinds = new Set((await install(['--certs', 'self-signed', '--monitoring', '--mandatory-audit-policy'])).map((o) => o.kind));
  for (const kind of ['Namespace', 'ServiceAccount', 'Secret', 'PersistentVolumeClaim', 'Deployment', 'Service', 'PodDisruptionBudget', 'MutatingWebhookConfiguration', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding', 'PodMonitor', 'ServiceMonitor', 'PrometheusRule', 'ConfigMap']) {
    t.true(kinds.has(kind), kind);
  }
  const certManager = new Set((await install([])).map((o) => o.kind));
  t.true(certManager.has('Certificate') && certManager.has('Issuer') && !certManager.has('Secret'));
});

test('deploy/install.yaml is the rendered default install (npm run render-deploy refreshes it)', async (t) => {
  const rendered = await runCli(['install']);
  t.is(rendered.code, 0, rendered.stderr);
  const committed = readFileSync(join(ROOT, 'deploy/install.yaml'), 'utf8');
  t.true(committed === rendered.stdout, 'deploy/install.yaml is stale: run `npm run render-deploy` and commit the result');
});

test('--monitoring-only: PodMonitor, ServiceMonitor, PrometheusRule and dashboard ConfigMaps, valid, with rules that parse as PromQL', async (t) => {
  const objects = await install(['--monitoring-only', '-n', 'obs']);
  t.deepEqual(objects.map((o) => o.kind), ['PodMonitor', 'ServiceMonitor', 'PrometheusRule', 'ConfigMap', 'ConfigMap', 'ConfigMap']);
  t.deepEqual(objects.map(schemaErrors).filter((e) => e !== null), []);
  t.true(objects.every((o) => o.metadata.namespace === 'obs'));
  const rule = find(objects, 'PrometheusRule') as Obj & { spec: { groups: Array<{ rules: Array<{ alert: string; expr: string; labels: { severity: string } }> }> } };
  const rules = rule.spec.groups.flatMap((g) => g.rules);
  for (const r of rules) t.deepEqual(parsePromQL(r.expr).errors, [], `${r.alert}: ${r.expr}`);
  const alerts = new Set(rules.map((r) => r.alert));
  t.is(alerts.size, rules.length, 'alert names repeat');
  // One alert at least for each thing the platform team must hear about.
  const uses = (metric: string): boolean => rules.some((r) => parsePromQL(r.expr).metricNames.has(metric));
  for (const metric of ['auditmesh_requests_total', 'auditmesh_shipper_lag_seconds', 'auditmesh_journal_limit_bytes', 'auditmesh_journal_unrecorded_total', 'auditmesh_collector_verification_failures_total', 'nodejs_eventloop_lag_p99_seconds', 'auditmesh_anomaly_active', 'auditmesh_collector_sidecars']) {
    t.true(uses(metric), `no alert on ${metric}`);
  }
  for (const cm of objects.filter((o) => o.kind === 'ConfigMap') as Array<Obj & { metadata: { labels: Record<string, string> }; data: Record<string, string> }>) {
    t.is(cm.metadata.labels.grafana_dashboard, '1', cm.metadata.name);
    const [file, text] = Object.entries(cm.data)[0]!;
    t.regex(file, /^auditmesh-[a-z-]+\.json$/);
    t.regex((JSON.parse(text) as { uid: string }).uid, /^auditmesh-/);
    t.true(Buffer.byteLength(text) < 256 * 1024, `${cm.metadata.name} is too big for a client-side kubectl apply`);
  }
});

test('deploy/monitoring.yaml is the rendered monitoring (npm run render-deploy refreshes it)', async (t) => {
  const dir = await tempDir(t);
  const rendered = await runCli(['install', '--monitoring-only', '--dashboards-dir', 'deploy/dashboards']);
  t.is(rendered.code, 0, rendered.stderr);
  t.true(readFileSync(join(ROOT, 'deploy/monitoring.yaml'), 'utf8') === rendered.stdout, 'deploy/monitoring.yaml is stale: run `npm run render-deploy` and commit the result');
  // --dashboards-dir writes the same dashboards the ConfigMaps carry.
  t.is((await runCli(['install', '--monitoring-only', '--dashboards-dir', dir])).code, 0);
  const objects = await install(['--monitoring-only']);
  for (const cm of objects.filter((o) => o.kind === 'ConfigMap') as Array<Obj & { data: Record<string, string> }>) {
    for (const [file, text] of Object.entries(cm.data)) t.true(readFileSync(join(dir, file), 'utf8') === text, file);
  }
});

test('control-plane pods announce their /metrics port with prometheus.io annotations, a port the pod declares', async (t) => {
  for (const name of ['auditmesh-collector', 'auditmesh-injector']) {
    const deployment = find(await install([]), 'Deployment', name) as Obj & { spec: { template: { metadata: { annotations: Record<string, string> }; spec: { containers: Array<{ ports: Array<{ containerPort: number }> }> } } } };
    const annotations: Record<string, string | undefined> = deployment.spec.template.metadata.annotations;
    t.is(annotations['prometheus.io/scrape'], 'true', name);
    t.is(annotations['prometheus.io/path'], '/metrics', name);
    // The collector's HTTP port serves HTTPS with its mesh-CA certificate; the injector's admin port plain HTTP.
    t.is(annotations['prometheus.io/scheme'], name === 'auditmesh-collector' ? 'https' : undefined, name);
    t.true(deployment.spec.template.spec.containers[0]!.ports.some((p) => String(p.containerPort) === annotations['prometheus.io/port']), name);
  }
});

test('the prometheus.io annotations of injected pods and control-plane pods point a Prometheus without the Operator at the port and path the PodMonitor and ServiceMonitor scrape', async (t) => {
  // Where each process would listen here; nothing is scraped.
  const local = { sidecars: [{ service: 'checkout', namespace: 'shop', adminPort: 20001 }], collectorHttpPort: 20002, collectorCaFile: '/etc/prometheus/secrets/auditmesh-mesh-ca/ca.crt', injectorAdminPort: 20003 };
  const { pods, config } = await localMonitoring(local, { scrapeInterval: '30s', evaluationInterval: '30s', rulesFile: 'rules.yml' });
  type Job = { metrics_path: string; scheme?: string; tls_config?: unknown; static_configs: Array<{ targets: string[]; labels: Record<string, string> }> };
  const jobs = config.scrape_configs as Job[];
  const byOperator = jobs.flatMap((j) => j.static_configs.flatMap((g) => g.targets.map((address) => ({ pod: g.labels.pod!, address, path: j.metrics_path, scheme: j.scheme ?? 'http' }))));
  const byPod = (a: { pod: string }, b: { pod: string }): number => a.pod.localeCompare(b.pod);
  t.deepEqual(annotatedTargets(pods).sort(byPod), byOperator.sort(byPod));
  t.deepEqual(byOperator.map((x) => x.address), ['127.0.0.1:20002', '127.0.0.1:20003', '127.0.0.1:20001'], 'the collector, the injector and the sidecar, each once');
  // The collector over HTTPS, verified against the mesh CA for its Service's name; the others plain HTTP.
  t.deepEqual(byOperator.map((x) => x.scheme), ['https', 'http', 'http']);
  const collectorJob = jobs.find((j) => j.static_configs.some((g) => g.labels.pod === 'auditmesh-collector-0'))!;
  t.deepEqual(collectorJob.tls_config, { ca_file: local.collectorCaFile, server_name: 'auditmesh-collector.auditmesh-system.svc' });
});

test('the ServiceMonitor scrapes the collector over HTTPS trusting the mesh CA Secret for its Service name, and the injector over HTTP', async (t) => {
  const objects = await install(['-n', 'audit', '--monitoring', '--certs', 'self-signed']);
  type Endpoint = { port: string; scheme?: string; tlsConfig?: unknown };
  const { endpoints } = (find(objects, 'ServiceMonitor') as Obj & { spec: { endpoints: Endpoint[] } }).spec;
  t.like(endpoints.find((e) => e.port === 'http'), { scheme: 'https', tlsConfig: { ca: { secret: { name: 'auditmesh-mesh-ca', key: 'ca.crt' } }, serverName: 'auditmesh-collector.audit.svc' } });
  const injector = endpoints.find((e) => e.port === 'http-metrics')!;
  t.is(injector.scheme, undefined);
  t.is(injector.tlsConfig, undefined);
  // The Secret it trusts is one the install renders (with cert-manager, one its Certificate fills), in the monitor's namespace, with that key.
  const certificate = (await install(['-n', 'audit', '--monitoring'])).find((o) => o.kind === 'Certificate' && (o as Obj & { spec: { secretName: string } }).spec.secretName === 'auditmesh-mesh-ca');
  t.is(certificate?.metadata.namespace, 'audit');
  const secret = find(objects, 'Secret', 'auditmesh-mesh-ca') as Obj & { metadata: { namespace: string }; data: Record<string, string> };
  t.is(secret.metadata.namespace, 'audit');
  t.true('ca.crt' in secret.data);
});

test('control-plane pods get an hour to start (a large store opens or migrates) before their liveness probe applies', async (t) => {
  for (const name of ['auditmesh-collector', 'auditmesh-injector']) {
    type Probe = { httpGet: { path: string }; periodSeconds: number; failureThreshold: number };
    const deployment = find(await install([]), 'Deployment', name) as Obj & { spec: { template: { spec: { containers: Array<{ startupProbe?: Probe; livenessProbe?: Probe }> } } } };
    const { startupProbe, livenessProbe } = deployment.spec.template.spec.containers[0]!;
    t.is(startupProbe?.httpGet.path, '/livez', name);
    t.true(startupProbe!.periodSeconds * startupProbe!.failureThreshold >= 3600, name);
    t.is(livenessProbe?.httpGet.path, '/livez', name);
  }
});

test("the collector's probes use HTTPS, as its HTTP port serves TLS with the mesh CA's certificate (the kubelet does not verify it); the injector's stay HTTP, in --ha too", async (t) => {
  type Probe = { httpGet: { scheme?: string } };
  type Container = { startupProbe: Probe; readinessProbe: Probe; livenessProbe: Probe };
  for (const args of [[], ['--ha']]) {
    const objects = await install(args);
    for (const [name, scheme] of [['auditmesh-collector', 'HTTPS'], ['auditmesh-injector', undefined]] as const) {
      const c = (find(objects, 'Deployment', name) as Obj & { spec: { template: { spec: { containers: Container[] } } } }).spec.template.spec.containers[0]!;
      t.deepEqual([c.startupProbe, c.readinessProbe, c.livenessProbe].map((p) => p.httpGet.scheme), [scheme, scheme, scheme], `${name} ${args.join(' ')}`);
    }
  }
});

test('install options reach the objects: namespace, image, replicas, resources, storage, collector address', async (t) => {
  const objects = await install(['-n', 'audit', '--image', 'registry.example/auditmesh:9', '--replicas', '3', '--injector-memory', '256Mi', '--collector-storage', '100Gi', '--proxy-memory-limit', '1Gi']);
  const clusterWide = new Set(['Namespace', 'MutatingWebhookConfiguration', 'ClusterRole', 'ClusterRoleBinding']);
  t.true(objects.filter((o) => !clusterWide.has(o.kind)).every((o) => o.metadata.namespace === 'audit'));
  // The collector's read of Services is bound to its ServiceAccount in the install's namespace.
  t.like(find(objects, 'ClusterRoleBinding', 'auditmesh-collector-services'), { subjects: [{ kind: 'ServiceAccount', name: 'auditmesh-collector', namespace: 'audit' }] });
  const injector = find(objects, 'Deployment', 'auditmesh-injector') as Obj & { spec: { replicas: number; template: { spec: { containers: Array<{ image: string; args: string[]; resources: unknown }> } } } };
  t.is(injector.spec.replicas, 3);
  const container = injector.spec.template.spec.containers[0]!;
  t.is(container.image, 'registry.example/auditmesh:9');
  t.deepEqual(container.resources, { requests: { cpu: '50m', memory: '256Mi' }, limits: { memory: '256Mi' } });
  // The injector's arguments are ones `auditmesh injector` accepts, and carry the sidecars' settings.
  const { values } = parseFlags(INJECTOR_FLAGS, container.args.slice(1), {});
  t.like(values, { image: 'registry.example/auditmesh:9', collector: 'auditmesh-collector.audit.svc:9400', 'proxy-memory-limit': '1Gi', 'tls-cert': '/etc/auditmesh/tls/tls.crt' });
  t.deepEqual((find(objects, 'PersistentVolumeClaim') as Obj & { spec: { resources: unknown } }).spec.resources, { requests: { storage: '100Gi' } });
  const webhook = find(objects, 'MutatingWebhookConfiguration') as Obj & { webhooks: Array<{ failurePolicy: string; clientConfig: { service: { namespace: string } }; namespaceSelector: { matchExpressions: Array<{ values: string[] }> } }> };
  for (const w of webhook.webhooks) {
    t.is(w.failurePolicy, 'Ignore');
    t.is(w.clientConfig.service.namespace, 'audit');
    t.true(w.namespaceSelector.matchExpressions.some((e) => e.values.includes('audit')), 'the control plane namespace is never injected');
  }
});

test('self-signed mode: the injector serves the rendered Secret’s pair, which the caBundle verifies for the Service name', async (t) => {
  const objects = await install(['--certs', 'self-signed', '--cert-valid-days', '30']);
  const secret = find(objects, 'Secret', 'auditmesh-injector-tls') as Obj & { data: Record<string, string> };
  const webhook = find(objects, 'MutatingWebhookConfiguration') as Obj & { webhooks: Array<{ clientConfig: { caBundle: string } }> };
  const dir = await tempDir(t);
  const decode = (b64: string): string => Buffer.from(b64, 'base64').toString('utf8');
  await writeFile(join(dir, 'tls.crt'), decode(secret.data['tls.crt']!));
  await writeFile(join(dir, 'tls.key'), decode(secret.data['tls.key']!));
  const injector = startCli(t, ['injector', '--port', '0', '--admin-port', '0', '--bind', '127.0.0.1', '--tls-cert', join(dir, 'tls.crt'), '--tls-key', join(dir, 'tls.key')]);
  const port = Number((await injector.waitFor(/"msg":"injector listening","port":(\d+)/, 45_000))[1]);
  const review = readFileSync(new URL('./fixtures/admission/deployment-pod.json', import.meta.url), 'utf8');
  for (const w of webhook.webhooks) {
    const status = await new Promise<number>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port, method: 'POST', path: '/inject', ca: decode(w.clientConfig.caBundle), servername: 'auditmesh-injector.auditmesh-system.svc', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end(review);
    });
    t.is(status, 200);
  }
});

test('deploy/: the container build file uses a glibc Node 20 base and copies only paths that exist; the init script is where the injector runs it', (t) => {
  const dockerfile = readFileSync(join(ROOT, 'deploy/Dockerfile'), 'utf8');
  const bases = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]!);
  t.true(bases.length > 0 && bases.every((b) => /^node:20-(bookworm|bullseye)(-slim)?$/.test(b)), bases.join(', '));
  for (const m of dockerfile.matchAll(/^COPY\s+(?!--from)(.+)\s+\S+$/gm)) {
    for (const source of m[1]!.trim().split(/\s+/)) t.true(existsSync(join(ROOT, source)), `COPY source ${source}`);
  }
  t.regex(dockerfile, /COPY deploy\/init\/iptables\.sh deploy\/init\/iptables\.sh/);
  // postinstall applies patches/ (the LMDB fix) during npm ci: they must be in the build stage first.
  t.true(dockerfile.includes('COPY patches patches') && dockerfile.indexOf('COPY patches patches') < dockerfile.indexOf('RUN npm ci'), 'patches/ is copied before npm ci');
  t.true(dockerfile.includes(`\nWORKDIR ${IMAGE_APP_DIR}\n`), `the image keeps the app in ${IMAGE_APP_DIR}`);
});
