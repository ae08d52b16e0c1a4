import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createWebhookCertificates } from '../control/install/webhook-certificates.js';
import { watchKubeServices } from '../control/collector/directory/kube-services.js';
import { startProcess } from './helpers/child.js';
import { freePort } from './helpers/nats-cluster.js';
import { tempDir } from './helpers/sidecar.js';
import { eventually } from './helpers/shipping.js';
import { createTokenIssuer } from './cluster/token-issuer.js';

// The collector reads the cluster's Services and EndpointSlices from the API server (the cluster
// harness' own API server, test/fixtures/cluster/api-server.mjs, on loopback) with its
// ServiceAccount token, to know which pods stand behind each ClusterIP.

const slice = (namespace: string, service: string, endpoints: Array<{ ip: string; ready?: boolean }>): object => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${service}-abc`, namespace, labels: { 'kubernetes.io/service-name': service } },
  addressType: 'IPv4',
  endpoints: endpoints.map((e) => ({ addresses: [e.ip], conditions: { ready: e.ready ?? true } })),
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
});
const service = (namespace: string, name: string, clusterIP: string): object => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec: { clusterIP, clusterIPs: clusterIP === 'None' ? undefined : [clusterIP], ports: [{ port: 80, targetPort: 8080 }] } });

test('ClusterIPs map to the ready pods of their EndpointSlices, follow changes, keep the last answer while the API server refuses, and need the token', async (t) => {
  const dir = await tempDir(t);
  const certs = await createWebhookCertificates(['localhost'], 1);
  const issuer = await createTokenIssuer();
  const files = { cert: join(dir, 'api.crt'), key: join(dir, 'api.key'), ca: join(dir, 'ca.crt'), jwks: join(dir, 'jwks.json'), services: join(dir, 'services.json'), token: join(dir, 'token') };
  await writeFile(files.cert, certs.cert);
  await writeFile(files.key, certs.key);
  await writeFile(files.ca, certs.caCert);
  await writeFile(files.jwks, JSON.stringify(issuer.jwks()));
  const objects = (services: object[], endpointSlices: object[]): Promise<void> => writeFile(files.services, JSON.stringify({ services, endpointSlices }));
  await objects(
    [service('shop', 'inventory', '10.96.0.20'), service('shop', 'orders', '10.96.0.21'), service('shop', 'db', 'None')],
    [slice('shop', 'inventory', [{ ip: '10.1.0.5' }, { ip: '10.1.0.6', ready: false }]), slice('shop', 'orders', [{ ip: '10.1.0.7' }]), slice('other', 'inventory', [{ ip: '10.9.9.9' }])],
  );
  await writeFile(files.token, await issuer.sign({ namespace: 'auditmesh-system', pod: { name: 'collector-0', uid: 'u1' }, serviceAccount: { name: 'auditmesh-collector', uid: 's1' } }, { audience: issuer.apiAudience, expirationSeconds: 600 }));
  const port = await freePort();
  const api = startProcess(t, process.execPath, ['test/fixtures/cluster/api-server.mjs', String(port), files.cert, files.key, files.jwks, issuer.issuer, issuer.apiAudience, files.services]);
  await api.waitFor(/api-server listening/, 30_000);

  let changes = 0;
  const warnings: string[] = [];
  const log = (level: string, msg: string): void => void (level === 'warn' && warnings.push(msg));
  const kube = watchKubeServices({ apiUrl: `https://localhost:${port}`, caFile: files.ca, bearerTokenFile: files.token, intervalMs: 100, onChange: () => changes++, log });
  t.teardown(() => kube.close());
  await eventually('the Services read', () => kube.clusterIps().length === 2);
  t.deepEqual(kube.backends('10.96.0.20'), ['10.1.0.5'], 'only the ready pod of its own namespace');
  t.deepEqual(kube.backends('10.96.0.21'), ['10.1.0.7']);
  t.is(kube.backends('10.1.0.5'), undefined, 'a pod address is no ClusterIP');
  t.is(changes, 1);

  // A pod becomes ready: the ClusterIP now leads to both.
  await objects([service('shop', 'inventory', '10.96.0.20')], [slice('shop', 'inventory', [{ ip: '10.1.0.5' }, { ip: '10.1.0.6' }])]);
  await eventually('the change seen', () => kube.backends('10.96.0.20')?.length === 2);
  t.deepEqual(kube.backends('10.96.0.20'), ['10.1.0.5', '10.1.0.6']);
  t.is(kube.backends('10.96.0.21'), undefined, 'a Service gone is gone');
  t.is(changes, 2);

  // Without a valid token the API server refuses: warned once, and the last answer stays.
  await writeFile(files.token, 'not-a-token');
  await eventually('the refusal warned', () => warnings.length === 1);
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.deepEqual(warnings, ['collector cannot list the cluster Services: ClusterIPs stay as last read']);
  t.deepEqual(kube.backends('10.96.0.20'), ['10.1.0.5', '10.1.0.6']);
});

test('the directory lists a ClusterIP when every ready pod behind it is a listed sidecar of one identity, and follows both the pods and the Services', async (t) => {
  const { Registry } = await import('prom-client');
  const { createMeshDirectory } = await import('../control/collector/directory/mesh-directory.js');
  const { withClusterIps } = await import('../control/collector/directory/cluster-ips.js');
  const pods = createMeshDirectory({ graceMs: 0, trustClaimedIp: false, registry: new Registry(), log: () => {} });
  t.teardown(() => pods.close());
  const claim = (ip: string, sa: string, pod: string): { release(): void } | null =>
    pods.claim({ podIp: ip, source: `${ip}:40000`, identity: `spiffe://cluster.local/ns/shop/sa/${sa}`, sidecarId: `shop/${pod}`, service: sa, chainKey: `shop/${pod}@u-${pod}` });
  const backends = new Map<string, string[]>([
    ['10.96.0.20', ['10.1.0.5', '10.1.0.6']],
    ['10.96.0.21', ['10.1.0.7']],
    ['10.96.0.22', []],
  ]);
  const view = withClusterIps(pods, { backends: (ip) => backends.get(ip), clusterIps: () => [...backends.keys()] });
  t.teardown(() => view.close());
  const changes: Array<{ added: string[]; removed: string[] }> = [];
  view.subscribe((c) => changes.push({ added: c.added.map((e) => e.ip), removed: c.removed }));

  const a = claim('10.1.0.5', 'inventory', 'inventory-a');
  t.false(view.has('10.96.0.20'), 'one of its two pods is not meshed: callers must not send it TLS');
  claim('10.1.0.6', 'inventory', 'inventory-b');
  t.true(view.has('10.96.0.20'));
  t.like(view.entries().find((e) => e.ip === '10.96.0.20'), { identity: 'spiffe://cluster.local/ns/shop/sa/inventory', service: 'inventory' });
  claim('10.1.0.7', 'orders', 'orders-a');
  t.true(view.has('10.96.0.21'));
  t.false(view.has('10.96.0.22'), 'a Service without ready pods is not listed');
  t.is(view.size, 5);

  // A third pod of another identity behind the inventory ClusterIP: the DNAT could pick it, so the ClusterIP leaves.
  claim('10.1.0.8', 'payments', 'payments-a');
  backends.set('10.96.0.20', ['10.1.0.5', '10.1.0.6', '10.1.0.8']);
  view.refresh();
  t.false(view.has('10.96.0.20'));
  backends.set('10.96.0.20', ['10.1.0.5', '10.1.0.6']);
  view.refresh();
  t.true(view.has('10.96.0.20'));
  // Its pod's sidecar gone (grace 0): the ClusterIP leaves with it.
  a!.release();
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.false(view.has('10.1.0.5'));
  t.false(view.has('10.96.0.20'));
  const serviceChanges = changes.filter((c) => [...c.added, ...c.removed].some((ip) => ip.startsWith('10.96.')));
  t.deepEqual(serviceChanges, [
    { added: ['10.96.0.20'], removed: [] },
    { added: ['10.96.0.21'], removed: [] },
    { added: [], removed: ['10.96.0.20'] },
    { added: ['10.96.0.20'], removed: [] },
    { added: [], removed: ['10.96.0.20'] },
  ]);
});
