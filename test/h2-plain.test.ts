import test from 'ava';
import http2 from 'node:http2';
import { closeServer, listen, refusedPort } from './helpers/net.js';
import { followTail, startTestSidecar } from './helpers/sidecar.js';

/** One h2c request; resolves with status, headers and body. */
function h2get(port: number, path: string, headers: http2.OutgoingHttpHeaders = {}): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const req = session.request({ ':path': path, ...headers });
    let body = '';
    let resHeaders: http2.IncomingHttpHeaders = {};
    req.on('response', (h) => (resHeaders = h));
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      session.close();
      resolve({ status: Number(resHeaders[':status']), headers: resHeaders, body });
    });
    req.on('error', reject);
    req.end();
  });
}

test('plain HTTP/2 (not gRPC) is proxied and recorded as http over version 2', async (t) => {
  const app = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  app.on('session', (s) => sessions.add(s));
  app.on('stream', (stream, headers) => {
    stream.respond({ ':status': 201, 'x-app': 'yes', 'content-type': 'text/plain' });
    stream.end(`you asked for ${headers[':path']} with ${headers['x-request-id']}`);
  });
  const port = await listen(app);
  t.teardown(() => (sessions.forEach((s) => s.destroy()), closeServer(app)));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const tail = await followTail(t, sidecar.ports.admin);
  const reply = await h2get(sidecar.ports.inbound!, '/h2/thing?x=1', { 'x-request-id': 'h2-plain' });
  t.is(reply.status, 201);
  t.is(reply.headers['x-app'], 'yes');
  t.is(reply.headers['x-request-id'], 'h2-plain');
  t.is(reply.body, 'you asked for /h2/thing?x=1 with h2-plain');
  const rec = await tail.next((r) => r['audit.request_id'] === 'h2-plain');
  t.is(rec['audit.kind'], 'http');
  t.is(rec['network.protocol.version'], '2');
  t.is(rec['url.path'], '/h2/thing');
  t.is(rec['url.query'], 'x=1');
  t.is(rec['http.response.status_code'], 201);
  t.is(rec['http.response.body.size'], reply.body.length);
});

test('plain HTTP/2 to a refused upstream gets 502 with the error code', async (t) => {
  const port = await refusedPort();
  const sidecar = await startTestSidecar(t, { appPort: port });
  const tail = await followTail(t, sidecar.ports.admin);
  const reply = await h2get(sidecar.ports.inbound!, '/down', { 'x-request-id': 'h2-down' });
  t.is(reply.status, 502);
  t.is(reply.headers['x-auditmesh-error'], 'AUDITMESH_UPSTREAM_REFUSED');
  const rec = await tail.next((r) => r['audit.request_id'] === 'h2-down');
  t.is(rec['error.type'], 'refused');
  t.is(rec['http.response.status_code'], 502);
});
