import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import { CLI, startProcess, type Running } from './child.js';
import { tempDir } from './sidecar.js';

/** `auditmesh collector` in a process of its own (what kill -9 needs), restartable on the same ports and store. */
export interface CollectorProcess {
  running: Running;
  grpcPort: number;
  httpPort: number;
  grpcAddress: string;
  httpUrl: string;
  storeDir: string;
  /** Request init carrying the reader token. */
  readAuth: { headers: Record<string, string> };
  kill(): void;
  /** Starts it again on the same ports and store. */
  restart(): Promise<void>;
}

/** Starts `auditmesh collector ARGS` from source with a token file holding `token` and a reader token of every namespace. */
export async function startCollectorProcess(t: ExecutionContext, token: string, args: string[]): Promise<CollectorProcess> {
  const dir = await tempDir(t, 'auditmesh-collector-');
  const tokenFile = join(dir, 'tokens');
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const reader = randomBytes(16).toString('hex');
  await writeFile(join(dir, 'reader-tokens'), `${reader} *\n`, { mode: 0o600 });
  const storeDir = join(dir, 'store');
  const launch = async (grpcPort: number, httpPort: number): Promise<{ running: Running; grpc: number; http: number }> => {
    const running = startProcess(t, process.execPath, [...CLI, 'collector', '--grpc-port', String(grpcPort), '--http-port', String(httpPort), '--store', storeDir, '--token-file', tokenFile, '--reader-token-file', join(dir, 'reader-tokens'), ...args]);
    const [line] = await running.waitFor(/^\{.*"msg":"collector listening".*\}$/m, 60_000);
    const { grpc, http } = JSON.parse(line) as { grpc: string; http: string };
    return { running, grpc: Number(grpc.split(':').pop()), http: Number(new URL(http).port) };
  };
  const first = await launch(0, 0);
  const p: CollectorProcess = {
    running: first.running,
    grpcPort: first.grpc,
    httpPort: first.http,
    grpcAddress: `127.0.0.1:${first.grpc}`,
    httpUrl: `http://127.0.0.1:${first.http}`,
    storeDir,
    readAuth: { headers: { authorization: `Bearer ${reader}` } },
    kill() {
      p.running.child.kill('SIGKILL');
    },
    async restart() {
      p.running = (await launch(p.grpcPort, p.httpPort)).running;
    },
  };
  return p;
}

/** A tiny TCP round-robin in front of `backends` (what a Kubernetes Service does): each connection to the next one; a refused backend just closes the client's connection. */
export async function startRoundRobin(t: ExecutionContext, backends: () => string[]): Promise<string> {
  let next = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const list = backends();
    const [host, port] = list[next++ % list.length].split(':');
    const upstream = net.connect(Number(port), host);
    sockets.add(client).add(upstream);
    const close = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}
