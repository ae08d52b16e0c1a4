import { randomUUID } from 'node:crypto';
import { parseAllDocuments } from 'yaml';

/** A Kubernetes object as the CLI renders it: plain data. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string>; [k: string]: unknown };
  [field: string]: unknown;
}

/** The objects of a multi-document YAML stream, `kind: List` flattened, each given a uid as the API server would. */
export function parseObjects(yaml: string): KubeObject[] {
  const docs = parseAllDocuments(yaml);
  const broken = docs.find((d) => d.errors.length > 0);
  if (broken !== undefined) throw new Error(`rendered YAML does not parse: ${broken.errors[0]!.message}`);
  const objects = docs.map((d) => d.toJS() as KubeObject | null).filter((o): o is KubeObject => o !== null);
  const flat = objects.flatMap((o) => (o.kind === 'List' ? (o.items as KubeObject[]) : [o]));
  for (const o of flat) o.metadata.uid ??= randomUUID();
  return flat;
}

/** The objects the harness holds, found by kind, namespace and name, as the API server would serve them. */
export class ObjectStore {
  readonly #objects: KubeObject[] = [];

  add(objects: readonly KubeObject[]): void {
    for (const o of objects) {
      const namespaced = o.kind !== 'Namespace' && !/^(Mutating|Validating)WebhookConfiguration$|^ValidatingAdmissionPolicy(Binding)?$|^Cluster/.test(o.kind);
      if (namespaced) {
        const ns = o.metadata.namespace ?? 'default';
        if (ns !== 'default' && this.get('Namespace', undefined, ns) === undefined && !objects.some((x) => x.kind === 'Namespace' && x.metadata.name === ns)) {
          throw new Error(`${o.kind} ${ns}/${o.metadata.name}: namespaces "${ns}" not found (apply its Namespace first)`);
        }
        o.metadata.namespace = ns;
      }
      this.#objects.push(o);
    }
  }

  get(kind: string, namespace: string | undefined, name: string): KubeObject | undefined {
    return this.#objects.find((o) => o.kind === kind && o.metadata.name === name && (namespace === undefined || o.metadata.namespace === namespace));
  }

  list(kind: string, namespace?: string): KubeObject[] {
    return this.#objects.filter((o) => o.kind === kind && (namespace === undefined || o.metadata.namespace === namespace));
  }

  /** Where else an object of this kind and name exists: for errors that say why a lookup failed. */
  namespacesOf(kind: string, name: string): string[] {
    return this.#objects.filter((o) => o.kind === kind && o.metadata.name === name).map((o) => o.metadata.namespace ?? '');
  }
}
