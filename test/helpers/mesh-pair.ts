import net from 'node:net';
import type http from 'node:http';
import type { ExecutionContext } from 'ava';
import { closeServer, listen, request } from './net.js';
import { followTail, startTestSidecar } from './sidecar.js';
import type { TestMeshCa } from './mesh-ca.js';
import { directoryOf, meshWorkload, spiffe } from './mesh-workload.js';
import type { MeshDirectory } from '../../proxy/mesh/directory.js';
import type { SidecarConfig } from '../../proxy/config.js';

/** The two workloads of the mesh tests: orders calls inventory. */
export const ORDERS = spiffe('orders');
export const INVENTORY = spiffe('inventory');

/** A TCP relay between the two sidecars that keeps every byte the caller's sidecar sent. */
export async function startTap(t: ExecutionContext, to: () => number): Promise<{ port: number; sent: Buffer[] }> {
  const sent: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(to(), '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.once('close', () => (client.destroy(), upstream.destroy()));
    }
    client.on('data', (c: Buffer) => sent.push(c));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await listen(server);
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return closeServer(server);
  });
  return { port, sent };
}

export interface PairOptions {
  appPort: number;
  /** The caller's directory; by default 127.0.0.1 is the callee, inventory. */
  callerDirectory?: MeshDirectory;
  /** The caller's --service (what it stamps in x-auditmesh-client). */
  callerService?: string;
  /** The callee's workload certificate; by default one of the mesh CA for inventory. */
  calleeWorkload?: Awaited<ReturnType<typeof meshWorkload>>;
  callee?: Partial<SidecarConfig>;
}

/** caller sidecar (orders) → tap → callee sidecar (inventory) → app; every name resolves to the tap. */
export async function startPair(t: ExecutionContext, ca: TestMeshCa, opts: PairOptions) {
  let calleePort = 0;
  const tap = await startTap(t, () => calleePort);
  const calleeWorkload = opts.calleeWorkload ?? (await meshWorkload(t, ca, INVENTORY));
  const callee = await startTestSidecar(t, { service: 'inventory', appPort: opts.appPort, directory: directoryOf('127.0.0.1', ORDERS, 'orders'), ...calleeWorkload, ...opts.callee });
  calleePort = callee.ports.inbound!;
  const at = { host: '127.0.0.1', port: tap.port };
  const caller = await startTestSidecar(t, {
    service: opts.callerService ?? 'orders',
    directory: opts.callerDirectory ?? directoryOf('127.0.0.1', INVENTORY, 'inventory'),
    resolve: new Map([['inventory:80', at], ['inventory:443', at]]),
    ...(await meshWorkload(t, ca, ORDERS)),
  });
  return { tap, callee, caller, callerTail: await followTail(t, caller.ports.admin), calleeTail: await followTail(t, callee.ports.admin) };
}

/** GET through the caller's outbound listener as an app using HTTP_PROXY does. */
export const viaProxy = (port: number, path: string, headers: http.OutgoingHttpHeaders = {}) => request(port, { path: `http://inventory${path}`, headers: { host: 'inventory', ...headers } });

