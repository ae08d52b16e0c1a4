// NetworkPolicies read as a CNI reads them: which source may reach which port of which pod.

/** Where a connection comes from: a pod's namespace (and its labels) and, for podSelectors, the pod's labels. */
export interface Peer {
  namespace: string;
  namespaceLabels: Record<string, string>;
  podLabels?: Record<string, string>;
}

type Selector = { matchLabels?: Record<string, string> };
type From = { namespaceSelector?: Selector; podSelector?: Selector };
type Rule = { from?: From[]; ports: Array<{ port: number }> };
export type Policy = { kind: string; metadata: { namespace: string }; spec: { podSelector: { matchLabels: Record<string, string> }; ingress: Rule[] } };

const matches = (selector: Selector, labels: Record<string, string>): boolean => Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);

/** Whether `peer` may reach `port` of the pod named `app` under these policies (the pod is selected by one, so only what is listed passes). */
export function allows(policies: Policy[], app: string, port: number, peer: Peer): boolean {
  const selecting = policies.filter((p) => p.spec.podSelector.matchLabels['app.kubernetes.io/name'] === app);
  if (selecting.length === 0) throw new Error(`no NetworkPolicy selects ${app}: everything could reach it`);
  return selecting.some((p) =>
    p.spec.ingress.some((rule) => rule.ports.some((r) => r.port === port) && (rule.from === undefined || rule.from.some((f) => fromMatches(f, p.metadata.namespace, peer)))),
  );
}

/** A podSelector alone means pods of the policy's namespace; with a namespaceSelector, pods of the namespaces it selects. */
function fromMatches(f: From, policyNamespace: string, peer: Peer): boolean {
  const namespaceOk = f.namespaceSelector === undefined ? peer.namespace === policyNamespace : matches(f.namespaceSelector, peer.namespaceLabels);
  return namespaceOk && (f.podSelector === undefined || matches(f.podSelector, peer.podLabels ?? {}));
}
