import { inject, INJECT_LABEL, type InjectResult } from './inject.js';
import { applyPatch } from './json-patch.js';
import type { ObjectMeta, Pod, PodSpec } from './pod.js';
import type { InjectOptions } from './sidecar-containers.js';

/** What happened to one object of a manifest. */
export interface ManifestEntry {
  /** `Kind/name`, for messages. */
  object: string;
  /** Null for objects that hold no pods (Services, ConfigMaps, ...): passed through unchanged. */
  result: InjectResult | null;
}

type Template = { metadata?: ObjectMeta; spec: PodSpec };
type Workload = { kind?: string; metadata?: ObjectMeta; spec?: Record<string, unknown>; items?: unknown[] };

/** Where each kind keeps its pod (template). */
const TEMPLATE_PATHS: Record<string, readonly string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

// Offline injection is asked for explicitly: every object counts as in an enabled namespace
// (a pod's own auditmesh.io/inject=false is still honoured).
const OFFLINE_NAMESPACE = { name: '', labels: { [INJECT_LABEL]: 'enabled' } };

/**
 * `auditmesh inject -f`: the webhook's policy applied to the pods of a manifest offline. Pods are
 * patched directly, workloads through their pod template, Lists item by item; everything else is
 * returned as it was.
 */
export function injectManifest(objects: readonly unknown[], options: InjectOptions): { objects: unknown[]; entries: ManifestEntry[] } {
  const entries: ManifestEntry[] = [];
  const visit = (obj: unknown): unknown => {
    const o = obj as Workload | null;
    if (o === null || typeof o !== 'object') return obj;
    const name = `${o.kind ?? 'object'}/${o.metadata?.name ?? o.metadata?.generateName ?? '?'}`;
    if (o.kind === 'List' && Array.isArray(o.items)) return { ...o, items: o.items.map(visit) };
    if (o.kind === 'Pod' && o.spec !== undefined) {
      const result = inject(o as Pod, OFFLINE_NAMESPACE, options);
      entries.push({ object: name, result });
      return applyPatch(o, result.patch);
    }
    const path = o.kind === undefined ? undefined : TEMPLATE_PATHS[o.kind];
    const template = path === undefined ? undefined : (path.reduce<unknown>((at, key) => (at as Record<string, unknown> | undefined)?.[key], o) as Template | undefined);
    if (path === undefined || template === undefined || !Array.isArray(template.spec?.containers)) {
      entries.push({ object: name, result: null });
      return obj;
    }
    const result = inject(template as Pod, OFFLINE_NAMESPACE, options);
    entries.push({ object: name, result });
    return setAt(o, path, applyPatch(template, result.patch));
  };
  return { objects: objects.map(visit), entries };
}

/** A copy of `obj` with the value at `path` replaced (the copies are shallow along the path only). */
function setAt(obj: unknown, path: readonly string[], value: unknown): unknown {
  if (path.length === 0) return value;
  const o = obj as Record<string, unknown>;
  return { ...o, [path[0]!]: setAt(o[path[0]!], path.slice(1), value) };
}
