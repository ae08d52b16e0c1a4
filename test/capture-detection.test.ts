import test from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { closeServer, listen, request, startUpstream } from './helpers/net.js';
import { followTail, startTestSidecar } from './helpers/sidecar.js';
import { detectProtocol, H2_PREFACE } from '../proxy/capture/detect.js';
import { parseClientHello, parseSni } from '../proxy/capture/tls-sni.js';

const CERT = readFileSync(new URL('./fixtures/tls-cert.pem', import.meta.url));
const KEY = readFileSync(new URL('./fixtures/tls-key.pem', import.meta.url));

test('detectProtocol tells HTTP/2, HTTP/1, TLS and anything else apart, asking for more bytes only when it must', (t) => {
  t.is(detectProtocol(H2_PREFACE), 'h2');
  t.is(detectProtocol(H2_PREFACE.subarray(0, 10)), null);
  t.is(detectProtocol(Buffer.from('GET / HTTP/1.1\r\n')), 'http1');
  t.is(detectProtocol(Buffer.from('PROPFIND /x HTTP/1.1')), 'http1');
  t.is(detectProtocol(Buffer.from('POS')), null);
  t.is(detectProtocol(Buffer.from([0x16, 0x03, 0x01])), 'tls');
  t.is(detectProtocol(Buffer.from('hello world\n')), 'tcp');
  t.is(detectProtocol(Buffer.from([0x00, 0x01, 0x02])), 'tcp');
  t.is(detectProtocol(Buffer.from('PRI * HTTP/1.1\r\n')), 'http1');
  t.is(detectProtocol(Buffer.from('A'.repeat(40))), 'tcp');
});

test('parseSni reads the server name of a real ClientHello and returns null for garbage', async (t) => {
  const hello = await new Promise<Buffer>((resolve) => {
    const server = net.createServer((s) => s.once('data', (d) => (resolve(d), s.destroy(), server.close())));
    server.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, servername: 'payments.shop.svc', rejectUnauthorized: false });
      c.on('error', () => {});
    });
  });
  t.is(parseSni(hello), 'payments.shop.svc');
  t.is(parseSni(hello.subarray(0, 30)), null);
  t.is(parseSni(Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00])), null);
  t.is(parseSni(Buffer.alloc(0)), null);
});

test('parseClientHello reads the ALPN protocols a real ClientHello offers, in order, and never throws on garbage', async (t) => {
  const helloOffering = (ALPNProtocols?: string[]) =>
    new Promise<Buffer>((resolve) => {
      const server = net.createServer((s) => s.once('data', (d) => (resolve(d), s.destroy(), server.close())));
      server.listen(0, '127.0.0.1', () => {
        const c = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, servername: 'inventory', rejectUnauthorized: false, ALPNProtocols });
        c.on('error', () => {});
      });
    });
  t.deepEqual(parseClientHello(await helloOffering(['auditmesh/1'])), { sni: 'inventory', alpn: ['auditmesh/1'] });
  t.deepEqual(parseClientHello(await helloOffering(['h2', 'http/1.1']))?.alpn, ['h2', 'http/1.1']);
  const plain = await helloOffering();
  t.deepEqual(parseClientHello(plain)?.alpn, []);
  for (let cut = 0; cut < plain.length; cut += 7) t.notThrows(() => parseClientHello(plain.subarray(0, cut)));
  t.is(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n')), null);
});

test('opaque TCP is relayed byte for byte and recorded with bytes each way', async (t) => {
  const echo = net.createServer((s) => s.pipe(s));
  const port = await listen(echo);
  t.teardown(() => closeServer(echo));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const tail = await followTail(t, sidecar.ports.admin);
  const reply = await new Promise<string>((resolve, reject) => {
    const c = net.connect(sidecar.ports.inbound!, '127.0.0.1');
    let out = '';
    c.on('data', (d) => {
      out += d;
      if (out === 'hello\n') c.write('world\n');
      if (out === 'hello\nworld\n') c.end();
    });
    c.on('close', () => resolve(out));
    c.on('error', reject);
    c.write('hello\n');
  });
  t.is(reply, 'hello\nworld\n');
  const rec = await tail.next((r) => r['audit.kind'] === 'tcp');
  t.is(rec['network.protocol.name'], 'tcp');
  t.is(rec['audit.bytes_in'], 12);
  t.is(rec['audit.bytes_out'], 12);
  t.is(rec['server.port'], port);
});

test('TLS passes through untouched (the client verifies the app’s certificate) and the record carries the SNI name', async (t) => {
  const app = tls.createServer({ cert: CERT, key: KEY }, (s) => s.end('secret stuff'));
  const port = await listen(app);
  t.teardown(() => closeServer(app));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const tail = await followTail(t, sidecar.ports.admin);
  const got = await new Promise<string>((resolve, reject) => {
    const c = tls.connect({ host: '127.0.0.1', port: sidecar.ports.inbound!, servername: 'secure.example', ca: CERT });
    let out = '';
    c.on('data', (d) => (out += d));
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
  t.is(got, 'secret stuff');
  const rec = await tail.next((r) => r['audit.kind'] === 'tcp');
  t.is(rec['network.protocol.name'], 'tls');
  t.is(rec['tls.client.server_name'], 'secure.example');
  t.true(rec['audit.bytes_in']! > 100 && rec['audit.bytes_out']! > 100);
});

test('a server-first protocol on an opaque port gets its greeting without the client sending first', async (t) => {
  const greeter = net.createServer((s) => s.end('220 welcome\r\n'));
  const port = await listen(greeter);
  t.teardown(() => closeServer(greeter));
  const sidecar = await startTestSidecar(t, { appPort: port, opaquePorts: new Set([port]), detectTimeoutMs: 10_000 });
  const started = Date.now();
  const greeting = await new Promise<string>((resolve, reject) => {
    const c = net.connect(sidecar.ports.inbound!, '127.0.0.1');
    let out = '';
    c.on('data', (d) => (out += d));
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
  t.is(greeting, '220 welcome\r\n');
  // Not held for the (here 10 s) detection timeout: opaque ports skip detection.
  t.true(Date.now() - started < 5000);
});

test('a silent client on a detected port is relayed as TCP after the detection timeout', async (t) => {
  const greeter = net.createServer((s) => s.end('hello from a server-first protocol\n'));
  const port = await listen(greeter);
  t.teardown(() => closeServer(greeter));
  const sidecar = await startTestSidecar(t, { appPort: port, detectTimeoutMs: 200 });
  const tail = await followTail(t, sidecar.ports.admin);
  const greeting = await new Promise<string>((resolve, reject) => {
    const c = net.connect(sidecar.ports.inbound!, '127.0.0.1');
    let out = '';
    c.on('data', (d) => (out += d));
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
  t.is(greeting, 'hello from a server-first protocol\n');
  const rec = await tail.next((r) => r['audit.kind'] === 'tcp');
  t.is(rec['audit.bytes_out'], greeting.length);
});

test('HTTP/1.1 still works on the same listener after detection, with keep-alive', async (t) => {
  const app = await startUpstream((_req, res) => res.end('ok'));
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  for (let i = 0; i < 3; i++) t.is((await request(sidecar.ports.inbound!, { path: `/x${i}` })).status, 200);
});
