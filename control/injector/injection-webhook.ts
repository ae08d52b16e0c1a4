import type { AdmissionDecision, AdmissionHandler, AdmissionRequest } from './admission-server.js';
import type { IgnoreReason } from './admission-outcomes.js';
import type { InjectorMetrics } from './injector-metrics.js';
import type { Pod } from './pod.js';
import { inject, INJECT_LABEL, type InjectResult } from './inject.js';
import type { InjectOptions } from './sidecar-containers.js';

/**
 * The webhook paths. The API server does not send the namespace's labels, so the
 * MutatingWebhookConfiguration says them through the path: its namespace-selected webhook calls
 * NAMESPACE_ENABLED_PATH, its pod-label-selected one POD_OPT_IN_PATH. No API access is needed.
 */
export const NAMESPACE_ENABLED_PATH = '/inject/namespace-enabled';
export const POD_OPT_IN_PATH = '/inject';

/** The admission handlers that apply the injection policy to pods being created. */
export function injectionHandlers(options: InjectOptions, metrics: InjectorMetrics): ReadonlyMap<string, AdmissionHandler> {
  const handler =
    (namespaceLabels: Record<string, string>): AdmissionHandler =>
    (request) => {
      const decision = decide(request, namespaceLabels, options);
      metrics.admissions.inc({ result: decision.result, reason: decision.reason });
      return decision;
    };
  return new Map([
    [NAMESPACE_ENABLED_PATH, handler({ [INJECT_LABEL]: 'enabled' })],
    [POD_OPT_IN_PATH, handler({})],
  ]);
}

function decide(request: AdmissionRequest, namespaceLabels: Record<string, string>, options: InjectOptions): AdmissionDecision & { result: 'injected' | 'skipped' | 'ignored'; reason: InjectResult['reason'] | IgnoreReason } {
  // Anything but the creation of a pod is let through untouched (a webhook misconfigured to send it must not block it).
  if (request.kind.kind !== 'Pod' || request.operation !== 'CREATE' || (request.subResource ?? '') !== '') {
    return { allowed: true, result: 'ignored', reason: 'not-pod-create' };
  }
  const pod = request.object as Pod | undefined;
  if (pod === undefined || pod === null || typeof pod !== 'object' || !Array.isArray(pod.spec?.containers)) {
    return { allowed: true, result: 'ignored', reason: 'no-pod-spec', warnings: ['auditmesh: the admission request carried no pod spec; admitted unchanged'] };
  }
  const result = inject(pod, { name: request.namespace ?? '', labels: namespaceLabels }, options);
  return { allowed: true, patch: result.patch, warnings: result.warnings, result: result.injected ? 'injected' : 'skipped', reason: result.reason };
}
