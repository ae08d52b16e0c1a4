import { stringify } from 'yaml';
import { COLLECTOR, componentLabels, type InstallOptions, type KubeObject } from './install-options.js';

/** The ServiceAccount auditors read with: `kubectl create token auditmesh-reader -n NS --audience auditmesh-read`. */
export const READER_SERVICE_ACCOUNT = 'auditmesh-reader';
export const READ_POLICY_CONFIGMAP = 'auditmesh-read-policy';
/** Where the collector finds the read policy (--read-policy). */
export const READ_POLICY_DIR = '/etc/auditmesh/read-policy';
export const READ_POLICY_FILE = `${READ_POLICY_DIR}/policy.yaml`;

/**
 * The read policy the install starts from: the control plane's auditmesh-reader reads every
 * namespace. Edit the ConfigMap to grant teams their own namespaces; the collector re-reads it.
 */
export function readPolicyObjects(o: InstallOptions): KubeObject[] {
  const policy = { readers: [{ serviceAccount: `${o.namespace}/${READER_SERVICE_ACCOUNT}`, namespaces: ['*'] }] };
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: READER_SERVICE_ACCOUNT, namespace: o.namespace, labels: componentLabels(READER_SERVICE_ACCOUNT) }, automountServiceAccountToken: false },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: READ_POLICY_CONFIGMAP, namespace: o.namespace, labels: componentLabels(COLLECTOR) }, data: { 'policy.yaml': stringify(policy) } },
  ];
}
