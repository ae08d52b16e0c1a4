/**
 * The parts of Kubernetes objects the injector reads and writes. Deliberately partial: unknown
 * fields pass through untouched, and the tests validate whole objects against the real schemas.
 */

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: Array<{ kind: string; name: string }>;
  [field: string]: unknown;
}

export interface ContainerPort {
  containerPort: number;
  name?: string;
  protocol?: string;
  [field: string]: unknown;
}

export interface SecurityContext {
  runAsUser?: number;
  runAsGroup?: number;
  runAsNonRoot?: boolean;
  [field: string]: unknown;
}

export interface Container {
  name: string;
  image?: string;
  ports?: ContainerPort[];
  securityContext?: SecurityContext;
  restartPolicy?: string;
  [field: string]: unknown;
}

export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Array<{ name: string; [field: string]: unknown }>;
  hostNetwork?: boolean;
  securityContext?: SecurityContext;
  [field: string]: unknown;
}

export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  spec: PodSpec;
  [field: string]: unknown;
}

/** What the policy knows of the pod's namespace: its name and labels. */
export interface NamespaceInfo {
  name: string;
  labels: Record<string, string>;
}
