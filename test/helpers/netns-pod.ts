import { chown } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { inject } from '../../control/injector/inject.js';
import { applyPatch } from '../../control/injector/json-patch.js';
import { INJECT_FLAGS, injectOptionsFromFlags } from '../../control/injector/inject-flags.js';
import type { Container, Pod } from '../../control/injector/pod.js';
import { parseFlags } from '../../command/flags.js';
import { readJournal } from '../../ledger/read-journal.js';
import type { JournalRecord } from '../../ledger/record.js';
import { CLI, type Running } from './child.js';
import { tempDir } from './sidecar.js';
import { createNamespaces, link, sh, startAgent, startIn, type Agent } from './netns.js';

export const PROXY_UID = 1337;
export const APP_UID = 1001;
// Private addresses that exist only inside the namespaces a test creates.
export const POD_IP = '10.77.1.1';
export const CLIENT = '10.77.1.2';
export const SERVER = '10.77.2.2';

/** The echo server's HTTP ports (test/fixtures/netns/echo-server.mjs); its other ports are fixed there. */
const SERVER_HTTP_PORTS = ['80', '8081', '9000'];

/** A pod built from network namespaces: client ⇄ pod ⇄ server, the pod captured by the init script. */
export interface NetnsPod {
  ns: Record<'pod' | 'client' | 'server', string>;
  /** The pod's and the server's ends of the pod ⇄ server link. */
  serverLink: [string, string];
  /** The init script's output. */
  init: string;
  server: Running;
  sidecar: Running;
  /** An HTTP client in the client namespace (another pod, as far as this one knows). */
  client: Agent;
  /** Asks the app (on its port 8080) to make one call; what the app got back. */
  viaApp: (path: string, query: Record<string, string>) => Promise<Record<string, unknown>>;
  /** Stops the sidecar (it must exit 0) and reads its journal. */
  records: () => Promise<JournalRecord[]>;
}

const envOf = (c: Container): Record<string, string> => Object.fromEntries((c.env as Array<{ name: string; value: string }>).map((e) => [e.name, e.value]));

/**
 * Builds `pod` as the injector would have it run: the init container's iptables script with the
 * injected env, the app (test/fixtures/netns/pod-app.mjs on the pod's container ports) as its own
 * uid, and the sidecar as uid 1337 with the injected env; only its files move to a temp folder.
 */
export async function startPod(t: ExecutionContext, pod: Pod): Promise<NetnsPod> {
  const options = injectOptionsFromFlags(parseFlags(INJECT_FLAGS, [], {}).values);
  const injected = applyPatch(pod, inject(pod, { name: 'shop', labels: { 'auditmesh.io/inject': 'enabled' } }, options).patch);
  const initEnv = envOf(injected.spec.initContainers!.find((c) => c.name === 'auditmesh-init')!);
  const proxyEnv = envOf(injected.spec.initContainers!.find((c) => c.name === 'auditmesh-proxy')!);

  const ns = await createNamespaces(t, ['pod', 'client', 'server']);
  await link(ns.pod, `${POD_IP}/24`, ns.client, `${CLIENT}/24`, 'c');
  const serverLink = await link(ns.pod, '10.77.2.1/24', ns.server, `${SERVER}/24`, 's');

  const server = startIn(t, ns.server, null, [process.execPath, 'test/fixtures/netns/echo-server.mjs', ...SERVER_HTTP_PORTS]);
  await server.waitFor(/server listening 9000/, 45_000);

  const init = await sh('ip', 'netns', 'exec', ns.pod, 'env', '-i', `PATH=${process.env.PATH}`, ...Object.entries(initEnv).map(([k, v]) => `${k}=${v}`), 'sh', 'deploy/init/iptables.sh');

  const appPorts = pod.spec.containers.flatMap((c) => (c.ports ?? []).map((p) => String(p.containerPort)));
  const app = startIn(t, ns.pod, APP_UID, [process.execPath, 'test/fixtures/netns/pod-app.mjs', ...appPorts]);
  await app.waitFor(new RegExp(`app listening ${appPorts.at(-1)}`), 45_000);

  const data = await tempDir(t);
  await chown(data, PROXY_UID, PROXY_UID);
  const sidecar = startIn(t, ns.pod, PROXY_UID, [process.execPath, ...CLI, 'sidecar'], {
    ...proxyEnv,
    AUDITMESH_JOURNAL: join(data, 'journal'),
    AUDITMESH_KEY: join(data, 'sidecar.key'),
    AUDITMESH_REDACTION_KEY: join(data, 'redaction.key'),
  });
  await sidecar.waitFor(/"msg":"sidecar listening"/, 45_000);

  const client = await startAgent(t, ns.client, null);
  const viaApp = async (path: string, query: Record<string, string>): Promise<Record<string, unknown>> => {
    const r = await client(`http://${POD_IP}:8080${path}?${new URLSearchParams(query)}`);
    if (r.status !== 200) throw new Error(`the app answered ${JSON.stringify(r)}`);
    return JSON.parse(r.body!) as Record<string, unknown>;
  };
  const records = async (): Promise<JournalRecord[]> => {
    sidecar.child.kill('SIGTERM');
    const exit = await sidecar.done;
    if (exit.code !== 0) throw new Error(`the sidecar exited ${exit.code}: ${exit.stderr}`);
    return readJournal(join(data, 'journal'));
  };
  return { ns, serverLink, init, server, sidecar, client, viaApp, records };
}
