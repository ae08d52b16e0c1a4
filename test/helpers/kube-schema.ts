import * as core from 'kubernetes-models/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as batch from 'kubernetes-models/batch/v1';
import * as rbac from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import * as admission from 'kubernetes-models/admissionregistration.k8s.io/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as networking from 'kubernetes-models/networking.k8s.io/v1';
import * as monitoring from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import * as certManager from '@kubernetes-models/cert-manager/cert-manager.io/v1';

interface ModelClass {
  apiVersion: string;
  kind: string;
  new (data: unknown): { validate(): void };
}

const MODELS = new Map<string, ModelClass>();
for (const group of [core, apps, batch, rbac, admission, policy, networking, monitoring, certManager]) {
  for (const value of Object.values(group) as unknown[]) {
    const model = value as Partial<ModelClass>;
    if (typeof value === 'function' && typeof model.apiVersion === 'string' && typeof model.kind === 'string') MODELS.set(`${model.apiVersion}/${model.kind}`, model as ModelClass);
  }
}

/**
 * Validates one object against the Kubernetes OpenAPI schema of its apiVersion and kind (the
 * kubernetes-models JSON schemas; Prometheus Operator and cert-manager CRDs included). Returns
 * null when valid, else the schema errors, each with the object's path.
 */
export function schemaErrors(obj: unknown): string | null {
  const { apiVersion, kind } = (obj ?? {}) as { apiVersion?: string; kind?: string };
  const model = MODELS.get(`${apiVersion}/${kind}`);
  if (model === undefined) return `no schema for ${apiVersion}/${kind}`;
  try {
    new model(obj).validate();
    return null;
  } catch (err) {
    return `${kind} ${(obj as { metadata?: { name?: string } }).metadata?.name ?? ''}: ${(err as Error).message}`;
  }
}
