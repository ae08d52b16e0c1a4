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
