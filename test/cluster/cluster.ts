import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { createWebhookCertificates } from '../../control/install/webhook-certificates.js';
import { startIn } from '../helpers/netns.js';
import { defaultRegistry, type Image, type ImageRegistry } from './image-registry.js';
import { runPod, type PodHandle } from './kubelet.js';
import { startNodeAgent, type NodeRequest } from './node-agent.js';
import { ObjectStore, type KubeObject } from './objects.js';
import type { PodInfo, PodSpec } from './pod-fields.js';
import { createPodNetwork, type PodNetwork } from './pod-network.js';
import { createTokenIssuer, type TokenIssuer } from './token-issuer.js';
import { claimsOf, podsOf, serviceAccountOf, withKubeApiAccess } from './workloads.js';

/**
 * A cluster of one node, played by the test: `apply` takes objects as `auditmesh install` and
 * `auditmesh inject -f` render them and runs their pods (test/cluster/kubelet.ts) in network
 * namespaces, with Services, ServiceAccount tokens and the API server's issuer discovery.
 */
export interface Cluster {
  network: PodNetwork;
  issuer: TokenIssuer;
  store: ObjectStore;
  /** HTTP GET from the node's namespace. */
  request: NodeRequest;
  /** Adds the objects and runs their pods; resolves once every new pod is ready. */
  apply(objects: KubeObject[]): Promise<PodHandle[]>;
  pods: PodHandle[];
  /** Every pod the harness started, ready or not (a pod whose container failed is here, not in `pods`). */
  started: PodHandle[];
  /** The one pod whose name starts with `prefix` (a Deployment's name). */
  pod(namespace: string, prefix: string): PodHandle;
  /** Host folder of a PersistentVolumeClaim's volume. */
  claimDir(namespace: string, claim: string): Promise<string>;
}

export interface ClusterOptions {
  images?: Record<string, Image>;
  tokenAlg?: 'RS256' | 'ES256';
}

const API_SERVER_NAMES = ['kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', 'kubernetes.default', 'kubernetes'];

export async function startCluster(t: ExecutionContext, options: ClusterOptions = {}): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-cluster-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const network = await createPodNetwork(t);
  const request = await startNodeAgent(t, network.node);
  const issuer = await createTokenIssuer({ alg: options.tokenAlg });
  const store = new ObjectStore();
  const images: ImageRegistry = defaultRegistry(options.images);
  const serviceHosts: string[] = [];
  /** What the API server lists of Services and EndpointSlices (api-server.mjs reads the file). */
  const apiObjects: { services: object[]; endpointSlices: object[] } = { services: [], endpointSlices: [] };
  const pods: PodHandle[] = [];
  const startedPods: PodHandle[] = [];

  // The API server (issuer discovery only), behind the `kubernetes` Service: the first ClusterIP.
  const certs = await createWebhookCertificates(API_SERVER_NAMES, 1);
  const files = { cert: join(dir, 'apiserver.crt'), key: join(dir, 'apiserver.key'), jwks: join(dir, 'jwks.json'), services: join(dir, 'services.json') };
  await writeFile(files.cert, certs.cert);
  await writeFile(files.key, certs.key);
  await writeFile(files.jwks, JSON.stringify(issuer.jwks()));
  const api = await network.addPod();
  const apiServer = startIn(t, api.ns, null, [process.execPath, 'test/fixtures/cluster/api-server.mjs', '443', files.cert, files.key, files.jwks, issuer.issuer, issuer.apiAudience, files.services]);
  await apiServer.waitFor(/api-server listening/, 30_000);
  const kubernetesService = await network.addService([{ port: 443, targetIp: api.ip, targetPort: 443 }]);
  serviceHosts.push(`${kubernetesService}\t${API_SERVER_NAMES.join(' ')}`);
  const rootCa = (ns: string): KubeObject => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'kube-root-ca.crt', namespace: ns }, data: { 'ca.crt': certs.caCert } });
  store.add([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' } }, rootCa('default')]);

  const claimDir = async (namespace: string, claim: string): Promise<string> => {
    const path = join(dir, 'claims', namespace, claim);
    await mkdir(path, { recursive: true });
    return path;
  };

  async function apply(objects: KubeObject[]): Promise<PodHandle[]> {
    store.add(objects);
    for (const ns of objects.filter((o) => o.kind === 'Namespace')) store.add([rootCa(ns.metadata.name)]);
    store.add(objects.flatMap(claimsOf));
    // Schedule: every new pod gets its namespace and address before any container starts.
    const scheduled: Array<{ info: PodInfo; netns: string }> = [];
    for (const o of objects) {
      for (const p of podsOf(o)) {
        const { ns, ip } = await network.addPod();
        const serviceAccount = serviceAccountOf(store, p);
        const object = withKubeApiAccess(store, p, serviceAccount);
        scheduled.push({ netns: ns, info: { object: object as KubeObject & { spec: PodSpec }, name: p.metadata.name, namespace: p.metadata.namespace!, uid: randomUUID(), ip, nodeName: 'harness-node', serviceAccount } });
      }
    }
    for (const svc of objects.filter((o) => o.kind === 'Service')) await addService(svc, scheduled.map((s) => s.info));
    const started = await Promise.all(
      scheduled.map(async ({ info, netns }) => {
        const podDir = join(dir, 'pods', info.namespace, info.name);
        await mkdir(podDir, { recursive: true });
        return runPod({ t, store, issuer, images, request, dir: podDir, hosts: hostsFor(info.namespace), kubernetesService, claimDir, onStart: (h) => startedPods.push(h) }, info, netns);
      }),
    );
    pods.push(...started);
    return started;
  }

  /**
   * A ClusterIP for the Service, DNAT to the first pod its selector matches (one replica is enough
   * here); for a headless Service, the DNS names of the pods it governs (hostname.subdomain).
   */
  async function addService(svc: KubeObject, candidates: PodInfo[]): Promise<void> {
    const spec = svc.spec as { clusterIP?: string; selector?: Record<string, string>; ports: Array<{ port: number; targetPort?: number | string }> };
    const selector = Object.entries(spec.selector ?? {});
    const matching = [...candidates, ...pods.map((p) => p.info)].filter((p) => p.namespace === svc.metadata.namespace && selector.every(([k, v]) => p.object.metadata.labels?.[k] === v));
    if (spec.clusterIP === 'None') return addHeadless(svc, matching);
    const target = matching[0];
    if (target === undefined) throw new Error(`service ${svc.metadata.namespace}/${svc.metadata.name}: no pod matches its selector`);
    const containers = [...(target.object.spec.initContainers ?? []), ...target.object.spec.containers];
    const port = (p: number | string | undefined, fallback: number): number => (typeof p === 'string' ? containers.flatMap((c) => c.ports ?? []).find((x) => x.name === p)?.containerPort ?? NaN : (p ?? fallback));
    const ip = await network.addService(spec.ports.map((p) => ({ port: p.port, targetIp: target.ip, targetPort: port(p.targetPort, p.port) })));
    const { name, namespace } = svc.metadata;
    // As the API server lists them: the Service with its ClusterIP, and one EndpointSlice naming the pod its traffic goes to.
    const ports = spec.ports as Array<{ name?: string; port: number; targetPort?: number | string; protocol?: string }>;
    apiObjects.services.push({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec: { ...spec, clusterIP: ip, clusterIPs: [ip] } });
    apiObjects.endpointSlices.push({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-harness`, namespace, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      endpoints: [{ addresses: [target.ip], conditions: { ready: true }, targetRef: { kind: 'Pod', namespace, name: target.name } }],
      ports: ports.map((p) => ({ ...(p.name === undefined ? {} : { name: p.name }), port: port(p.targetPort, p.port), protocol: p.protocol ?? 'TCP' })),
    });
    await writeFile(files.services, JSON.stringify(apiObjects));
    serviceHosts.push(`${ip}\t${name}.${namespace}.svc.cluster.local ${name}.${namespace}.svc ${name}.${namespace} ${namespace}:${name}`);
  }

  function addHeadless(svc: KubeObject, matching: PodInfo[]): void {
    const { name, namespace } = svc.metadata;
    const governed = matching.filter((p) => p.object.spec.subdomain === name && p.object.spec.hostname !== undefined);
    if (governed.length === 0) throw new Error(`headless service ${namespace}/${name}: no pod has it as subdomain`);
    for (const p of governed) {
      const host = `${p.object.spec.hostname}.${name}.${namespace}`;
      serviceHosts.push(`${p.ip}\t${host}.svc.cluster.local ${host}.svc ${host}`);
    }
  }

  /** /etc/hosts lines: every Service by its full names, and by its short name in its own namespace. */
  function hostsFor(namespace: string): string {
    return serviceHosts.map((line) => line.replace(/ (\S+):(\S+)$/, (_, ns: string, name: string) => (ns === namespace ? ` ${name}` : ''))).join('\n') + '\n';
  }

  return {
    network,
    issuer,
    store,
    request,
    apply,
    pods,
    started: startedPods,
    claimDir,
    pod(namespace, prefix) {
      const found = pods.filter((p) => p.namespace === namespace && p.name.startsWith(prefix));
      if (found.length !== 1) throw new Error(`${found.length} pods named ${prefix}* in ${namespace}`);
      return found[0]!;
    },
  };
}
