import test from 'ava';
import { renderInstall } from '../control/install/render-install.js';
import { installOptions } from '../control/cli/install.js';
import { schemaErrors } from './helpers/kube-schema.js';
import { allows, type Peer, type Policy } from './helpers/network-policy.js';

// The NetworkPolicies `auditmesh install` renders for the control plane, read as a CNI reads them
// (test/helpers/network-policy.ts).

test('install renders NetworkPolicies: ingest from any namespace, the query API only from the control plane and labelled namespaces, the webhook from anywhere, metrics from monitoring', async (t) => {
  const objects = await renderInstall(installOptions([]));
  const policies = objects.filter((o) => o.kind === 'NetworkPolicy') as unknown as Policy[];
  t.is(policies.length, 2);
  t.deepEqual(policies.map(schemaErrors).filter((e) => e !== null), []);
  const shop: Peer = { namespace: 'shop', namespaceLabels: { 'kubernetes.io/metadata.name': 'shop' } };
  const self: Peer = { namespace: 'auditmesh-system', namespaceLabels: {} };
  const readers: Peer = { namespace: 'audit', namespaceLabels: { 'auditmesh.io/read-access': 'allowed' } };
  const prometheus: Peer = { namespace: 'monitoring', namespaceLabels: { 'auditmesh.io/monitoring': 'allowed' } };
  t.true(allows(policies, 'auditmesh-collector', 9400, shop), 'sidecars anywhere ship');
  t.false(allows(policies, 'auditmesh-collector', 9401, shop), 'an application namespace cannot reach the query API');
  t.true(allows(policies, 'auditmesh-collector', 9401, self));
  t.true(allows(policies, 'auditmesh-collector', 9401, readers));
  t.true(allows(policies, 'auditmesh-collector', 9401, prometheus), 'the collector serves /metrics on its HTTP port');
  t.true(allows(policies, 'auditmesh-injector', 9443, shop), 'the API server calls the webhook from wherever it runs');
  t.false(allows(policies, 'auditmesh-injector', 9444, shop));
  t.true(allows(policies, 'auditmesh-injector', 9444, prometheus));
  t.false(allows(policies, 'auditmesh-collector', 9999, self), 'no other port');
});
