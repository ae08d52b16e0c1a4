import { execFile } from 'node:child_process';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { startProcess, type Finished, type Running } from '../helpers/child.js';
import { containerRun, containerScript, type Bind, type ContainerRun } from './container.js';
import type { ImageRegistry } from './image-registry.js';
import type { NodeRequest } from './node-agent.js';
import type { ObjectStore } from './objects.js';
import type { Container, PodInfo } from './pod-fields.js';
import { runProbe, type ProbeKind, type ProbeRecord } from './probes.js';
import type { TokenIssuer } from './token-issuer.js';
import { prepareVolumes, writeToken, type PreparedVolume } from './volumes.js';

const run = promisify(execFile);

/** A running container: its process, what it runs, and its logs. */
export interface ContainerHandle {
  name: string;
  running: Running;
  spec: ContainerRun;
  logs(): string;
}

/** A pod the harness runs: handles to look into it, exec in it and stop it. */
export interface PodHandle {
  info: PodInfo;
  name: string;
  namespace: string;
  ip: string;
  netns: string;
  containers: Map<string, ContainerHandle>;
  volumes: Map<string, PreparedVolume>;
  probes: ProbeRecord[];
  /** Set when the kubelet evicted the pod (an emptyDir past its sizeLimit). */
  evicted: string | undefined;
  /** Runs a command in a container's namespaces, root and identity (kubectl exec). */
  exec(container: string, argv: string[]): Promise<Finished>;
  /** Writes every projected ServiceAccount token again, as the kubelet rotates them. */
  rotateTokens(): Promise<void>;
  /** SIGTERM to app containers, then sidecars (reverse start order); their exits. */
  stop(): Promise<Map<string, Finished>>;
}

export interface KubeletDeps {
  t: ExecutionContext;
  store: ObjectStore;
  issuer: TokenIssuer;
  images: ImageRegistry;
  request: NodeRequest;
  /** Folder for this pod's files (volumes, roots, hosts). */
  dir: string;
  /** /etc/hosts lines for this pod: the cluster's Services and itself. */
  hosts: string;
  kubernetesService: string;
  claimDir(namespace: string, claim: string): Promise<string>;
  /** Told of the pod as soon as its handle exists, before its containers start. */
  onStart?(pod: PodHandle): void;
}

const EVICTION_CHECK_MS = 2000;

/** Runs a scheduled pod as the kubelet does: volumes, init containers in order, native sidecars, containers, probes. */
export async function runPod(deps: KubeletDeps, pod: PodInfo, netns: string): Promise<PodHandle> {
  const volumes = await prepareVolumes({ store: deps.store, issuer: deps.issuer, pod, dir: join(deps.dir, 'volumes'), claimDir: deps.claimDir });
  await writeFile(join(deps.dir, 'hosts'), `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${pod.ip}\t${pod.name}\n${deps.hosts}`);
  // A cluster DNS that does not exist: names resolve through /etc/hosts, and nothing leaves the harness.
  await writeFile(join(deps.dir, 'resolv.conf'), `search ${pod.namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.79.0.10\noptions ndots:5\n`);
  const controller = new AbortController();
  const handle: PodHandle = {
    info: pod,
    name: pod.name,
    namespace: pod.namespace,
    ip: pod.ip,
    netns,
    containers: new Map(),
    volumes,
    probes: [],
    evicted: undefined,
    exec: (name, argv) => execIn(deps.t, handle, name, argv),
    rotateTokens: async () => {
      for (const v of volumes.values()) for (const token of v.tokens) await writeToken({ issuer: deps.issuer, pod }, token);
    },
    stop: () => stopPod(handle, controller),
  };
  deps.onStart?.(handle);
  deps.t.teardown(() => controller.abort());
  watchVolumes(handle, controller.signal);
  scheduleRotation(handle, controller.signal);
  const probeLoops: Array<Promise<void>> = [];
  const started = (c: Container): Promise<void> => startContainer(deps, handle, c, controller.signal, probeLoops);
  for (const c of pod.object.spec.initContainers ?? []) {
    if (c.restartPolicy === 'Always') {
      await started(c);
      continue;
    }
    await started(c);
    const exit = await handle.containers.get(c.name)!.running.done;
    if (exit.code !== 0) throw new Error(`pod ${pod.namespace}/${pod.name}: init container ${c.name} exited ${exit.code}:\n${exit.stdout}${exit.stderr}`);
  }
  await Promise.all(pod.object.spec.containers.map(started));
  await Promise.all(probeLoops.splice(0));
  return handle;
}

/** Starts one container; resolves once its startup probe passed and it is ready (readiness passed once). */
async function startContainer(deps: KubeletDeps, pod: PodHandle, c: Container, signal: AbortSignal, ready: Array<Promise<void>>): Promise<void> {
  const image = await deps.images(c.image);
  const spec = containerRun(c, pod.info, deps.store, image, deps.kubernetesService);
  const binds: Bind[] = [];
  for (const b of image.binds) binds.push({ host: b.host, path: b.path, readOnly: true, file: (await stat(b.host)).isFile() });
  for (const m of c.volumeMounts ?? []) {
    const v = pod.volumes.get(m.name);
    if (v === undefined) throw new Error(`container ${c.name}: volumeMount ${m.name} names no volume of the pod`);
    const host = m.subPath !== undefined ? join(v.path, m.subPath) : v.path;
    binds.push({ host, path: m.mountPath, readOnly: m.readOnly === true, file: (await stat(host)).isFile() });
  }
  for (const f of ['hosts', 'resolv.conf']) binds.push({ host: join(deps.dir, f), path: `/etc/${f}`, readOnly: true, file: true });
  const root = join(deps.dir, 'rootfs', c.name);
  await mkdir(root, { recursive: true });
  const script = containerScript(root, pod.name, spec, binds);
  const running = startProcess(deps.t, 'ip', ['netns', 'exec', pod.netns, 'unshare', '--mount', '--uts', '--propagation', 'private', '--', 'sh', '-c', script], { PATH: process.env.PATH });
  pod.containers.set(c.name, { name: c.name, running, spec, logs: () => Object.values(running.output()).join('') });
  const kinds: Array<[ProbeKind, Container['startupProbe']]> = [
    ['startup', c.startupProbe],
    ['readiness', c.readinessProbe],
    ['liveness', c.livenessProbe],
  ];
  const records = Object.fromEntries(kinds.filter(([, p]) => p !== undefined).map(([kind, p]) => [kind, { container: c.name, kind, passed: 0, failed: 0, failedAfterPass: 0, failureRunAfterPass: 0, threshold: p!.failureThreshold ?? 3, lastFailure: '', last: '' } as ProbeRecord]));
  pod.probes.push(...Object.values(records));
  const died = running.done.then((f) => {
    if (!signal.aborted) throw new Error(`pod ${pod.namespace}/${pod.name}: container ${c.name} exited ${f.code}:\n${f.stdout}${f.stderr}`);
  });
  if (c.startupProbe !== undefined) await Promise.race([runProbe(deps.request, pod.ip, c, 'startup', c.startupProbe, records.startup!, signal), died]);
  if (c.livenessProbe !== undefined) void runProbe(deps.request, pod.ip, c, 'liveness', c.livenessProbe, records.liveness!, signal);
  if (c.readinessProbe !== undefined) {
    let isReady!: () => void;
    const readyNow = new Promise<void>((resolve) => (isReady = resolve));
    void runProbe(deps.request, pod.ip, c, 'readiness', c.readinessProbe, records.readiness!, signal, isReady);
    ready.push(Promise.race([readyNow, died]));
  }
  died.catch(() => {});
}

async function execIn(t: ExecutionContext, pod: PodHandle, name: string, argv: string[]): Promise<Finished> {
  const c = pod.containers.get(name);
  if (c === undefined) throw new Error(`pod ${pod.name} has no container ${name}`);
  const { uid, gid, env } = c.spec;
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return startProcess(t, 'nsenter', ['-t', String(c.running.child.pid), '-m', '-u', '-n', '-r', '-w', '--', '/usr/bin/setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '/usr/bin/env', '-i', ...envArgs, ...argv], { PATH: process.env.PATH }).done;
}

async function stopPod(pod: PodHandle, controller: AbortController): Promise<Map<string, Finished>> {
  controller.abort();
  const exits = new Map<string, Finished>();
  for (const c of [...pod.containers.values()].reverse()) {
    if (c.running.child.exitCode === null && c.running.child.signalCode === null) c.running.child.kill('SIGTERM');
    exits.set(c.name, await c.running.done);
  }
  return exits;
}

/** The kubelet's eviction for emptyDir sizeLimit: usage measured periodically, the pod killed past it. */
function watchVolumes(pod: PodHandle, signal: AbortSignal): void {
  const limited = [...pod.volumes.values()].filter((v) => v.sizeLimitBytes !== undefined);
  if (limited.length === 0) return;
  const timer = setInterval(async () => {
    for (const v of limited) {
      const used = Number((await run('du', ['-sb', v.path]).catch(() => ({ stdout: '0' }))).stdout.split('\t')[0]);
      if (used > v.sizeLimitBytes! && pod.evicted === undefined) {
        pod.evicted = `emptyDir ${v.name} uses ${used} bytes, over its sizeLimit of ${v.sizeLimitBytes}`;
        for (const c of pod.containers.values()) c.running.child.kill('SIGKILL');
      }
    }
  }, EVICTION_CHECK_MS);
  timer.unref();
  signal.addEventListener('abort', () => clearInterval(timer), { once: true });
}

/** The kubelet refreshes a projected token once it is older than 80% of its lifetime. */
function scheduleRotation(pod: PodHandle, signal: AbortSignal): void {
  const lifetimes = [...pod.volumes.values()].flatMap((v) => v.tokens.map((t) => t.expirationSeconds));
  if (lifetimes.length === 0) return;
  const timer = setInterval(() => void pod.rotateTokens(), Math.min(...lifetimes) * 800);
  timer.unref();
  signal.addEventListener('abort', () => clearInterval(timer), { once: true });
}
