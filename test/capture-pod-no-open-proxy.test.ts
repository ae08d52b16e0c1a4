import test from 'ava';
import type { Pod } from '../control/injector/pod.js';
import { requireInterception } from './helpers/netns.js';
import { POD_IP, SERVER, startPod } from './helpers/netns-pod.js';

/** A pod that declares no inbound capture: nothing redirects what arrives at its IP. */
const POD: Pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'reports-5d8f9c7b6-q4m2z', labels: { app: 'reports' }, annotations: { 'auditmesh.io/exclude-inbound-ports': '*' } },
  spec: { containers: [{ name: 'reports', image: 'reports:1', ports: [{ containerPort: 8080 }] }] },
};

test('with inbound capture off, the outbound listener is not reachable on the pod IP, and the app’s redirected outbound calls still go through it', async (t) => {
  if (!requireInterception(t)) return;
  const pod = await startPod(t, POD);
  t.regex(pod.init, /excluded inbound ports: \*/);

  // Another pod uses this one's outbound port as an HTTP proxy: it must find nothing listening.
  const asProxy = await pod.client(`http://${SERVER}:80/through-the-pod`, undefined, `${POD_IP}:15001`);
  t.is(asProxy.error, 'ECONNREFUSED', JSON.stringify(asProxy));
  // The app's port itself is reachable (inbound capture off, so directly).
  t.is((await pod.client(`http://${POD_IP}:8080/hello`)).status, 200);

  // The app's own calls are redirected to 127.0.0.1:15001 (REDIRECT in OUTPUT maps to loopback) and audited.
  const call = (await pod.viaApp('/call', { url: `http://${SERVER}:8081/redirected` })) as { status: number; body: string };
  t.is(call.status, 200);
  t.is(JSON.parse(call.body).headers['x-auditmesh-client'], 'reports');

  const seen = pod.server.output().stdout;
  t.false(seen.includes('/through-the-pod'));
  const records = await pod.records();
  t.is(records.filter((r) => r['url.path'] === '/through-the-pod').length, 0);
  t.like(records.find((r) => r['url.path'] === '/redirected'), { 'audit.direction': 'outbound', 'server.address': SERVER, 'server.port': 8081, 'http.response.status_code': 200 });
});
