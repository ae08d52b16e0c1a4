import test from 'ava';
import http from 'node:http';
import net from 'node:net';
import { closeServer, listen, rawExchange, startUpstream, refusedPort } from './helpers/net.js';
import { followTail, startTestSidecar } from './helpers/sidecar.js';

test('outbound: an absolute-form request (the app uses HTTP_PROXY) goes to the URL host and is recorded', async (t) => {
  const upstream = await startUpstream((_req, res) => res.end('from upstream'));
  t.teardown(upstream.close);
  const sidecar = await startTestSidecar(t, { service: 'frontend' });
  const tail = await followTail(t, sidecar.ports.admin);

  const raw = await rawExchange(sidecar.ports.outbound, `GET http://127.0.0.1:${upstream.port}/stock?id=4 HTTP/1.1\r\nHost: 127.0.0.1:${upstream.port}\r\nConnection: close\r\n\r\n`);
  t.regex(raw, /^HTTP\/1\.1 200/);
  t.regex(raw, /from upstream$/);
  // The upstream gets origin-form, and learns which service called it.
  t.is(upstream.seen[0]!.url, '/stock?id=4');
  t.is(upstream.seen[0]!.headers['x-auditmesh-client'], 'frontend');
  const rec = await tail.next((r) => r['url.path'] === '/stock');
  t.is(rec['audit.direction'], 'outbound');
  t.is(rec['server.address'], '127.0.0.1');
  t.is(rec['server.port'], upstream.port);
});

test('outbound: an origin-form request (redirected by iptables) is routed by its Host header', async (t) => {
  const upstream = await startUpstream((_req, res) => res.end('by host'));
  t.teardown(upstream.close);
  const sidecar = await startTestSidecar(t);
  const tail = await followTail(t, sidecar.ports.admin);
  const raw = await rawExchange(sidecar.ports.outbound, `GET /by-host HTTP/1.1\r\nHost: 127.0.0.1:${upstream.port}\r\nConnection: close\r\n\r\n`);
  t.regex(raw, /by host$/);
  t.is(upstream.seen[0]!.url, '/by-host');
  const rec = await tail.next((r) => r['url.path'] === '/by-host');
  t.is(rec['server.port'], upstream.port);
});

test('outbound through a real HTTP proxy client: node http with the sidecar as proxy, peer named by --resolve', async (t) => {
  const upstream = await startUpstream((_req, res) => res.end('inventory says hi'));
  t.teardown(upstream.close);
  const sidecar = await startTestSidecar(t, { service: 'frontend', resolve: new Map([['inventory:80', { host: '127.0.0.1', port: upstream.port }]]) });
  const tail = await followTail(t, sidecar.ports.admin);
  const body = await new Promise<string>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: sidecar.ports.outbound, path: 'http://inventory/items/1', headers: { host: 'inventory' }, agent: false }, (res) => {
        let b = '';
        res.on('data', (c) => (b += c));
        res.on('end', () => resolve(b));
      })
      .on('error', reject);
  });
  t.is(body, 'inventory says hi');
  const rec = await tail.next((r) => r['url.path'] === '/items/1');
  t.is(rec['peer.service'], 'inventory');
  t.is(rec['server.address'], 'inventory');
});

test('inbound: the calling sidecar’s service name becomes the peer and is not passed to the app', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const callee = await startTestSidecar(t, { service: 'inventory', appPort: app.port });
  const caller = await startTestSidecar(t, { service: 'frontend', resolve: new Map([['inventory:80', { host: '127.0.0.1', port: callee.ports.inbound! }]]) });
  const calleeTail = await followTail(t, callee.ports.admin);
  const callerTail = await followTail(t, caller.ports.admin);
  await rawExchange(caller.ports.outbound, 'GET http://inventory/edge HTTP/1.1\r\nHost: inventory\r\nConnection: close\r\n\r\n');
  const inbound = await calleeTail.next((r) => r['url.path'] === '/edge');
  const outbound = await callerTail.next((r) => r['url.path'] === '/edge');
  t.is(inbound['peer.service'], 'frontend');
  t.is(outbound['peer.service'], 'inventory');
  t.is(inbound['trace.id'], outbound['trace.id']);
  t.is(inbound['audit.request_id'], outbound['audit.request_id']);
  t.is(app.seen[0]!.headers['x-auditmesh-client'], undefined);
});

test('CONNECT is relayed byte for byte and recorded as a tunnel with its authority and byte counts', async (t) => {
  const echo = net.createServer((s) => s.pipe(s));
  const port = await listen(echo);
  t.teardown(() => closeServer(echo));
  const sidecar = await startTestSidecar(t);
  const tail = await followTail(t, sidecar.ports.admin);

  const reply = await new Promise<string>((resolve, reject) => {
    const s = net.connect(sidecar.ports.outbound, '127.0.0.1');
    let out = '';
    s.on('data', (c) => {
      out += c;
      if (out.includes('\r\n\r\n') && !out.includes('PING')) s.write('PING-1234');
      if (out.endsWith('PING-1234')) s.end();
    });
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  });
  t.regex(reply, /^HTTP\/1\.1 200 Connection Established\r\n\r\nPING-1234$/);
  const rec = await tail.next((r) => r['audit.kind'] === 'tunnel');
  t.is(rec['http.request.method'], 'CONNECT');
  t.is(rec['server.address'], '127.0.0.1');
  t.is(rec['server.port'], port);
  t.is(rec['audit.bytes_in'], 9);
  t.is(rec['audit.bytes_out'], 9);
});

test('CONNECT to a closed port gets 502 and is recorded as refused', async (t) => {
  const port = await refusedPort();
  const sidecar = await startTestSidecar(t);
  const tail = await followTail(t, sidecar.ports.admin);
  const raw = await rawExchange(sidecar.ports.outbound, `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.regex(raw, /^HTTP\/1\.1 502/);
  const rec = await tail.next((r) => r['audit.kind'] === 'tunnel');
  t.is(rec['error.type'], 'refused');
});
