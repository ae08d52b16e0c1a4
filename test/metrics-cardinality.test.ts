import test from 'ava';
import http from 'node:http';
import http2 from 'node:http2';
import { randomUUID } from 'node:crypto';
import { listen, request, startUpstream } from './helpers/net.js';
import { scrape, startTestSidecar } from './helpers/sidecar.js';
import { seriesCounts } from './helpers/prom-text.js';

const ROUND = 1000;
const METHODS = ['GET', 'POST', 'DELETE', 'PURGE', 'BREW', 'M-SEARCH'];

/** Every value here is one a label must never carry: each request gets fresh ones. */
function hostileRequest(round: number, i: number) {
  const id = `${round}-${i}-${randomUUID()}`;
  return {
    method: METHODS[i % METHODS.length]!,
    path: `/orders/${id}/items?page=${i}&session=${id}&q=${encodeURIComponent('x y ' + id)}`,
    headers: {
      'x-request-id': `req-${id}`,
      'x-forwarded-for': `10.${round}.${(i >> 8) & 255}.${i & 255}, 192.0.2.${i % 250}`,
      traceparent: `00-${randomUUID().replace(/-/g, '')}-${randomUUID().replace(/-/g, '').slice(0, 16)}-01`,
      'user-agent': `client/${id}`,
      // Not a service name: an address and a pod name are never peer labels.
      'x-auditmesh-client': i % 2 === 0 ? `10.1.${i & 255}.7` : `Pod_${id}`,
    },
  };
}

async function h2GrpcCall(port: number, path: string): Promise<void> {
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  try {
    await new Promise<void>((resolve, reject) => {
      const stream = client.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc' });
      stream.on('error', reject);
      stream.on('close', () => resolve());
      stream.resume();
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  } finally {
    client.close();
  }
}

test('thousands of distinct paths, queries, ids, addresses, methods and gRPC statuses leave the number of series unchanged', async (t) => {
  const app = await startUpstream((req, res) => {
    const i = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('page') ?? 0);
    res.statusCode = [200, 404, 500][i % 3]!;
    res.end();
  });
  t.teardown(app.close);
  // A gRPC upstream that answers every call with a status no gRPC code has: a buggy or hostile app.
  const grpcApp = http2.createServer();
  grpcApp.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': String(1000 + Number(String(headers[':path']).split('/').pop())) }));
    stream.resume();
    stream.end();
  });
  const grpcPort = await listen(grpcApp as unknown as http.Server);
  t.teardown(() => grpcApp.close());
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const grpcSidecar = await startTestSidecar(t, { appPort: grpcPort });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());

  const round = async (r: number): Promise<Map<string, number>> => {
    const sends: Array<Promise<unknown>> = [];
    for (let i = 0; i < ROUND; i++) {
      const { method, path, headers } = hostileRequest(r, i);
      sends.push(request(sidecar.ports.inbound!, { method, path, headers, agent }));
      // Outbound through the HTTP proxy port to an address: the peer is unknown, not the address.
      if (i % 4 === 0) sends.push(request(sidecar.ports.outbound, { method, path: `http://127.0.0.1:${app.port}${path}`, headers, agent }));
    }
    for (let i = 0; i < 50; i++) sends.push(h2GrpcCall(grpcSidecar.ports.inbound!, `/pkg.Svc${r}${i}/M${r}x${i}/${r * 100 + i}`));
    await Promise.all(sends);
    const text = (await scrape(sidecar.ports.admin)) + (await scrape(grpcSidecar.ports.admin));
    // Label sets only: sample values (a process's memory in bytes) may contain any digits.
    const labelSets = text.split('\n').map((l) => /\{.*\}/.exec(l)?.[0] ?? '').join('\n');
    for (const needle of ['/orders/', 'req-', '10.1.', '192.0.2.', 'Pod_', 'BREW', 'Svc', 'grpc_status="1']) t.false(labelSets.includes(needle), `${needle} reached a label: ${labelSets.split('\n').find((l) => l.includes(needle))}`);
    return seriesCounts(text);
  };
  const first = await round(1);
  const second = await round(2);
  const ours = (counts: Map<string, number>) => Object.fromEntries([...counts].filter(([name]) => name.startsWith('auditmesh_')));
  t.deepEqual(ours(second), ours(first), 'a second round of fresh values added series');
  const total = Object.values(ours(second)).reduce((a, b) => a + b, 0);
  t.true(total < 400, `${total} auditmesh_ series after ${2 * ROUND} hostile requests`);
  t.true(first.get('auditmesh_requests_total')! >= 6, 'the requests were counted');
  t.regex(await scrape(grpcSidecar.ports.admin), /auditmesh_requests_total\{[^}]*grpc_status="_OTHER"/);
});
