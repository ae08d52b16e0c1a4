import { INJECT_LABEL } from '../injector/inject.js';
import { NAMESPACE_ENABLED_PATH, POD_OPT_IN_PATH } from '../injector/injection-webhook.js';
import { componentLabels, INJECTOR, INJECTOR_TLS_SECRET, injectorDnsNames, type InstallOptions, type KubeObject } from './install-options.js';
import { createWebhookCertificates } from './webhook-certificates.js';

const WEBHOOK_TIMEOUT_S = 5;

/**
 * The MutatingWebhookConfiguration: two webhooks, because a namespace selector and an object
 * selector must both match. One for enabled namespaces (pods may opt out), one for pods that opt
 * in elsewhere. Neither reaches kube-system or the control plane's own namespace.
 * `failurePolicy: Ignore`: an injector outage admits pods without the sidecar rather than block them.
 */
export function mutatingWebhookConfiguration(o: InstallOptions, caBundle: string | undefined): KubeObject {
  const excluded = { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', o.namespace] };
  const webhook = (name: string, path: string, namespaceSelector: unknown, objectSelector: unknown): Record<string, unknown> => ({
    name,
    clientConfig: { service: { name: INJECTOR, namespace: o.namespace, path, port: 443 }, ...(caBundle !== undefined ? { caBundle } : {}) },
    rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }],
    namespaceSelector,
    objectSelector,
    admissionReviewVersions: ['v1'],
    sideEffects: 'None',
    failurePolicy: 'Ignore',
    reinvocationPolicy: 'Never',
    timeoutSeconds: WEBHOOK_TIMEOUT_S,
  });
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: {
      name: INJECTOR,
      labels: componentLabels(INJECTOR),
      ...(o.certs === 'cert-manager' ? { annotations: { 'cert-manager.io/inject-ca-from': `${o.namespace}/${INJECTOR}` } } : {}),
    },
    webhooks: [
      webhook('namespace.inject.auditmesh.io', NAMESPACE_ENABLED_PATH, { matchExpressions: [{ key: INJECT_LABEL, operator: 'In', values: ['enabled'] }, excluded] }, { matchExpressions: [{ key: INJECT_LABEL, operator: 'NotIn', values: ['false'] }] }),
      webhook('pod.inject.auditmesh.io', POD_OPT_IN_PATH, { matchExpressions: [{ key: INJECT_LABEL, operator: 'NotIn', values: ['enabled'] }, excluded] }, { matchLabels: { [INJECT_LABEL]: 'true' } }),
    ],
  };
}

/**
 * The webhook's serving certificate and the MutatingWebhookConfiguration that trusts it.
 * cert-manager mode: a self-signed Issuer and a Certificate; cert-manager's CA injector fills the
 * caBundle and renews. Self-signed mode: a private CA made now, its serving pair in a Secret and
 * the CA in the caBundle; renew by rendering and applying again before it expires.
 */
export async function webhookObjects(o: InstallOptions): Promise<KubeObject[]> {
  const labels = componentLabels(INJECTOR);
  if (o.certs === 'cert-manager') {
    return [
      { apiVersion: 'cert-manager.io/v1', kind: 'Issuer', metadata: { name: `${INJECTOR}-selfsigned`, namespace: o.namespace, labels }, spec: { selfSigned: {} } },
      {
        apiVersion: 'cert-manager.io/v1',
        kind: 'Certificate',
        metadata: { name: INJECTOR, namespace: o.namespace, labels },
        spec: {
          secretName: INJECTOR_TLS_SECRET,
          dnsNames: injectorDnsNames(o.namespace),
          duration: `${o.certValidDays * 24}h`,
          renewBefore: `${Math.max(1, Math.floor(o.certValidDays / 3)) * 24}h`,
          privateKey: { algorithm: 'ECDSA', size: 256, rotationPolicy: 'Always' },
          usages: ['server auth', 'digital signature', 'key encipherment'],
          issuerRef: { name: `${INJECTOR}-selfsigned`, kind: 'Issuer' },
        },
      },
      mutatingWebhookConfiguration(o, undefined),
    ];
  }
  const pair = await createWebhookCertificates(injectorDnsNames(o.namespace), o.certValidDays);
  const b64 = (pem: string): string => Buffer.from(pem).toString('base64');
  return [
    { apiVersion: 'v1', kind: 'Secret', metadata: { name: INJECTOR_TLS_SECRET, namespace: o.namespace, labels }, type: 'kubernetes.io/tls', data: { 'tls.crt': b64(pair.cert), 'tls.key': b64(pair.key), 'ca.crt': b64(pair.caCert) } },
    mutatingWebhookConfiguration(o, b64(pair.caCert)),
  ];
}
