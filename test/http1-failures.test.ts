import test from 'ava';
import http from 'node:http';
import net from 'node:net';
import { closeServer, listen, request, startUpstream, refusedPort } from './helpers/net.js';
import { followTail, startTestSidecar } from './helpers/sidecar.js';

test('a refused upstream gets 502 and is recorded as refused', async (t) => {
  const port = await refusedPort();
  const sidecar = await startTestSidecar(t, { appPort: port });
  const tail = await followTail(t, sidecar.ports.admin);

  const reply = await request(sidecar.ports.inbound!, { path: '/refused' });
  t.is(reply.status, 502);
  t.is(reply.headers['x-auditmesh-error'], 'AUDITMESH_UPSTREAM_REFUSED');
  t.truthy(reply.headers['x-request-id']);
  const rec = await tail.next((r) => r['url.path'] === '/refused');
  t.is(rec['error.type'], 'refused');
  t.is(rec['http.response.status_code'], 502);
});

test('a hanging upstream gets 504 after the configured response timeout and is recorded as timeout', async (t) => {
  const hang = http.createServer(() => {});
  const port = await listen(hang);
  t.teardown(() => closeServer(hang));
  const sidecar = await startTestSidecar(t, { appPort: port, responseTimeoutMs: 300 });
  const tail = await followTail(t, sidecar.ports.admin);

  const started = Date.now();
  const reply = await request(sidecar.ports.inbound!, { path: '/hang' });
  const elapsed = Date.now() - started;
  t.is(reply.status, 504);
  t.is(reply.headers['x-auditmesh-error'], 'AUDITMESH_UPSTREAM_TIMEOUT');
  t.true(elapsed >= 290, `answered after ${elapsed} ms, before the timeout`);
  const rec = await tail.next((r) => r['url.path'] === '/hang');
  t.is(rec['error.type'], 'timeout');
  t.is(rec['http.response.status_code'], 504);
});

test('a client abort mid-upload aborts the upstream request and is recorded as aborted', async (t) => {
  let upstreamSawAbort!: () => void;
  const aborted = new Promise<void>((resolve) => (upstreamSawAbort = resolve));
  let upstreamSawBody!: () => void;
  const bodyArrived = new Promise<void>((resolve) => (upstreamSawBody = resolve));
  const app = http.createServer((req) => {
    req.on('data', () => upstreamSawBody());
    req.on('close', () => {
      if (!req.complete) upstreamSawAbort();
    });
  });
  const port = await listen(app);
  t.teardown(() => closeServer(app));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const tail = await followTail(t, sidecar.ports.admin);

  const client = net.connect(sidecar.ports.inbound!, '127.0.0.1');
  client.on('error', () => {});
  client.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n' + 'a'.repeat(1000));
  // Mid-upload for the upstream too: it has the request and part of its body when the client goes.
  await bodyArrived;
  client.destroy();

  await aborted;
  const rec = await tail.next((r) => r['url.path'] === '/upload');
  t.is(rec['error.type'], 'aborted');
  t.true(rec['http.request.body.size']! >= 1000 && rec['http.request.body.size']! < 100000);
});

test('an upstream reset mid-response reaches the client as an abort, never a complete body, and is recorded as incomplete', async (t) => {
  const app = net.createServer((socket) => {
    socket.once('data', () => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' + 'x'.repeat(100));
      setTimeout(() => socket.resetAndDestroy(), 50);
    });
  });
  const port = await listen(app);
  t.teardown(() => closeServer(app));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const tail = await followTail(t, sidecar.ports.admin);

  const outcome = await new Promise<string>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: sidecar.ports.inbound, path: '/reset', agent: false }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve('complete'));
      res.on('error', () => resolve('aborted'));
      res.on('aborted', () => resolve('aborted'));
    });
    req.on('error', () => resolve('aborted'));
  });
  t.is(outcome, 'aborted');
  const rec = await tail.next((r) => r['url.path'] === '/reset');
  t.is(rec['error.type'], 'incomplete');
  t.is(rec['http.response.status_code'], 200);
  t.is(rec['http.response.body.size'], 100);
});

test('an upstream chunked response cut short is an abort to the client', async (t) => {
  const app = net.createServer((socket) => {
    socket.once('data', () => {
      socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
      setTimeout(() => socket.destroy(), 50);
    });
  });
  const port = await listen(app);
  t.teardown(() => closeServer(app));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const outcome = await new Promise<string>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: sidecar.ports.inbound, path: '/cut', agent: false }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve('complete'));
      res.on('error', () => resolve('aborted'));
    });
    req.on('error', () => resolve('aborted'));
  });
  t.is(outcome, 'aborted');
});

test('invalid bytes in an upstream response header give 502, and the sidecar keeps serving', async (t) => {
  const app = net.createServer((socket) => {
    socket.once('data', (data) => {
      if (data.toString().startsWith('GET /bad')) socket.end('HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok');
      else socket.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
    });
  });
  const port = await listen(app);
  t.teardown(() => closeServer(app));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const bad = await request(sidecar.ports.inbound!, { path: '/bad' });
  t.is(bad.status, 502);
  const good = await request(sidecar.ports.inbound!, { path: '/good' });
  t.is(good.status, 200);
  t.is(good.body.toString(), 'ok');
});

test('a malformed request gets 400 and the listener keeps serving', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const raw = await new Promise<string>((resolve) => {
    const s = net.connect(sidecar.ports.inbound!, '127.0.0.1');
    let out = '';
    s.on('data', (c) => (out += c));
    s.on('close', () => resolve(out));
    s.write('GET / HTTP/1.1\r\nBad Header\r\n\r\n');
  });
  t.regex(raw, /^HTTP\/1\.1 400/);
  t.is((await request(sidecar.ports.inbound!)).status, 200);
});

test('past the pool and its queue, a request to a stuck upstream gets 503 at once, recorded as overload; the others are answered when it recovers', async (t) => {
  const held: http.ServerResponse[] = [];
  const stuck = http.createServer((_req, res) => held.push(res));
  const port = await listen(stuck);
  t.teardown(() => closeServer(stuck));
  const sidecar = await startTestSidecar(t, { appPort: port, maxSocketsPerUpstream: 2, maxPendingPerUpstream: 2 });
  const tail = await followTail(t, sidecar.ports.admin);

  // Two hold the pool's sockets, two wait in its queue: the limit.
  const waiting = Array.from({ length: 4 }, (_, i) => request(sidecar.ports.inbound!, { path: `/wait/${i}` }));
  while (held.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
  const started = Date.now();
  const over = await request(sidecar.ports.inbound!, { path: '/over' });
  t.is(over.status, 503);
  t.is(over.headers['x-auditmesh-error'], 'AUDITMESH_OVERLOAD');
  t.true(Date.now() - started < 5_000, 'answered at once, not after the response timeout');
  const rec = await tail.next((r) => r['url.path'] === '/over');
  t.is(rec['error.type'], 'overload');
  t.is(rec['http.response.status_code'], 503);

  // The upstream recovers: everything that waited is answered, and the limit is free again.
  const answer = (res: http.ServerResponse): void => void res.end('late');
  held.splice(0).forEach(answer);
  stuck.on('request', () => held.splice(0).forEach(answer));
  t.deepEqual((await Promise.all(waiting)).map((r) => r.status), [200, 200, 200, 200]);
  t.is((await request(sidecar.ports.inbound!, { path: '/after' })).status, 200);
});
