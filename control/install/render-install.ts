import { collector, injector, namespace, serviceAccounts } from './control-plane.js';
import type { InstallOptions, KubeObject } from './install-options.js';
import { monitoring } from './monitoring.js';
import { mandatoryAuditPolicy } from './mandatory-audit-policy.js';
import { webhookObjects } from './webhook-config.js';
import { networkPolicies } from './network-policies.js';
import { readPolicyObjects } from './read-policy-config.js';
import { collectorTier } from './collector-tier.js';
import { natsCluster, natsNetworkPolicy } from './nats-cluster.js';
import { meshCaObjects, meshCaPair } from './mesh-ca-secret.js';

/**
 * The control plane's manifests, in the order `kubectl apply` should meet them: the namespace and
 * identities, certificates (the webhook's, the mesh CA), the collector and the injector, then the webhook configuration last
 * (with failurePolicy Ignore it is harmless before the injector is up, but there is no point
 * calling it earlier), then the optional policy and monitoring objects.
 */
export async function renderInstall(o: InstallOptions): Promise<KubeObject[]> {
  const webhook = await webhookObjects(o);
  const config = webhook.filter((x) => x.kind === 'MutatingWebhookConfiguration');
  return [
    namespace(o),
    ...serviceAccounts(o),
    ...webhook.filter((x) => x.kind !== 'MutatingWebhookConfiguration'),
    ...meshCaObjects(o, await meshCaPair(o)),
    ...readPolicyObjects(o),
    ...(o.ha ? [...natsCluster(o), ...collectorTier(o)] : collector(o)),
    ...injector(o),
    ...networkPolicies(o),
    ...(o.ha ? [natsNetworkPolicy(o)] : []),
    ...config,
    ...(o.mandatoryAuditPolicy ? mandatoryAuditPolicy(o) : []),
    ...(o.monitoring ? monitoring(o) : []),
  ];
}
