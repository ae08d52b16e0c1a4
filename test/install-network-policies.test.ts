import test from 'ava';
import { renderInstall } from '../control/install/render-install.js';
import { installOptions } from '../control/cli/install.js';
import { schemaErrors } from './helpers/kube-schema.js';

// The NetworkPolicies `auditmesh install` renders for the control plane, read as a CNI reads them:
// which source may reach which port of which pod.

interface Peer {
  namespace: string;
  namespaceLabels: Record<string, string>;
}

type Rule = { from?: Array<{ namespaceSelector?: { matchLabels?: Record<string, string> }; podSelector?: object }>; ports: Array<{ port: number }> };
type Policy = { kind: string; metadata: { namespace: string }; spec: { podSelector: { matchLabels: Record<string, string> }; ingress: Rule[] } };

/** Whether `peer` may reach `port` of the pod named `app` under these policies (the pod is selected by one, so only what is listed passes). */
function allows(policies: Policy[], app: string, port: number, peer: Peer): boolean {
  const selecting = policies.filter((p) => p.spec.podSelector.matchLabels['app.kubernetes.io/name'] === app);
  if (selecting.length === 0) throw new Error(`no NetworkPolicy selects ${app}: everything could reach it`);
  return selecting.some((p) =>
    p.spec.ingress.some((rule) => rule.ports.some((r) => r.port === port) && (rule.from === undefined || rule.from.some((f) => fromMatches(f, p.metadata.namespace, peer)))),
  );
}

function fromMatches(f: NonNullable<Rule['from']>[number], policyNamespace: string, peer: Peer): boolean {
  if (f.namespaceSelector === undefined) return peer.namespace === policyNamespace;
  return Object.entries(f.namespaceSelector.matchLabels ?? {}).every(([k, v]) => peer.namespaceLabels[k] === v);
}

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
