import test from 'ava';
import http from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';
import { closeServer, listen } from './helpers/net.js';
import { followTail, metricValue, scrape, startTestSidecar } from './helpers/sidecar.js';

test('proxies a WebSocket echo session and records it with bytes each way', async (t) => {
  const server = http.createServer();
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (m, isBinary) => ws.send(m, { binary: isBinary })));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const tail = await followTail(t, sidecar.ports.admin);

  const ws = new WebSocket(`ws://127.0.0.1:${sidecar.ports.inbound}/chat`);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const echoes: string[] = [];
  for (const msg of ['one', 'two', 'three']) {
    ws.send(msg);
    echoes.push(await new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString()))));
  }
  ws.close();
  t.deepEqual(echoes, ['one', 'two', 'three']);

  const rec = await tail.next((r) => r['audit.kind'] === 'websocket');
  t.is(rec['url.path'], '/chat');
  t.is(rec['http.response.status_code'], 101);
  // Client frames are masked: 2 header + 4 mask bytes + payload; the 101 head counts toward bytes out.
  t.true(rec['audit.bytes_in']! >= 6 * 3 + 'onetwothree'.length, `bytes in ${rec['audit.bytes_in']}`);
  t.true(rec['audit.bytes_out']! >= 'HTTP/1.1 101 Switching Protocols\r\n'.length + 2 * 3 + 'onetwothree'.length, `bytes out ${rec['audit.bytes_out']}`);
  t.truthy(rec['trace.id']);
  const metrics = await scrape(sidecar.ports.admin);
  const session = { direction: 'inbound', kind: 'websocket' };
  t.deepEqual(['opened_total', 'closed_total', 'active'].map((m) => metricValue(metrics, `auditmesh_connections_${m}`, session)), [1, 1, 0]);
});

test('a WebSocket upgrade the upstream refuses is relayed as its response', async (t) => {
  const server = http.createServer((_req, res) => res.end());
  server.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const ws = new WebSocket(`ws://127.0.0.1:${sidecar.ports.inbound}/nope`);
  const status = await new Promise<number>((resolve) => {
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.on('error', () => resolve(-1));
  });
  t.is(status, 403);
});
