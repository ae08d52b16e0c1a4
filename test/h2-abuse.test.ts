import test from 'ava';
import http2 from 'node:http2';
import net from 'node:net';
import { H2_PREFACE } from '../proxy/capture/detect.js';
import { followTail, metricValue, scrape, startTestSidecar } from './helpers/sidecar.js';
import { echoClient, startEchoServer, unary } from './helpers/grpc.js';

test('a rapid-reset flood (CVE-2023-44487) does not take the sidecar down, and other clients keep being served', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const attacker = http2.connect(`http://127.0.0.1:${sidecar.ports.inbound}`);
  attacker.on('error', () => {});
  t.teardown(() => attacker.destroy());
  await new Promise<void>((resolve) => attacker.once('connect', () => resolve()));
  let opened = 0;
  for (let i = 0; i < 5000 && !attacker.destroyed && !attacker.closed; i++) {
    try {
      const s = attacker.request({ ':method': 'POST', ':path': '/test.Echo/Unary', 'content-type': 'application/grpc' });
      s.on('error', () => {});
      s.close(http2.constants.NGHTTP2_CANCEL);
      opened++;
    } catch {
      break;
    }
  }
  await new Promise((r) => setTimeout(r, 500));
  t.log(`attacker opened and reset ${opened} streams`);
  const { reply, error } = await unary(echoClient(t, sidecar.ports.inbound!), { text: 'still here' });
  t.is(error, undefined);
  t.is(reply!.text, 'still here');
});

test('a PING and SETTINGS flood from a client that never reads is bounded, and the sidecar keeps serving', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const tail = await followTail(t, sidecar.ports.admin);
  // Raw frames: node:http2 itself refuses to send such a flood.
  const socket = net.connect(sidecar.ports.inbound!, '127.0.0.1');
  socket.on('error', () => {});
  t.teardown(() => socket.destroy());
  const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(true)));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.pause(); // never reads: acknowledgements pile up on the sidecar's side
  socket.write(Buffer.concat([H2_PREFACE, Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
  const ping = Buffer.from([0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
  const settings = Buffer.from([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
  const flood = Buffer.concat(Array.from({ length: 1000 }, (_, i) => (i % 2 === 0 ? ping : settings)));
  // ~15 MB of frames whose acknowledgements the sidecar would have to queue without bound.
  for (let i = 0; i < 1000 && !socket.destroyed; i++) socket.write(flood);
  const wasClosed = await Promise.race([closed, new Promise<boolean>((r) => setTimeout(() => r(false), 3000))]);
  // Either bound is fine: the sidecar closes the session, or (node:http2's own flood guard) it
  // stops reading from it, so the flood backs up on the attacker's side instead of in its memory.
  t.log(wasClosed ? 'flooding connection closed' : `attacker still holds ${(socket.writableLength / 2 ** 20).toFixed(1)} MiB unsent`);
  t.true(wasClosed || socket.writableLength > 1024 * 1024, 'the sidecar kept reading and queueing the flood');
  const { reply } = await unary(echoClient(t, sidecar.ports.inbound!), { text: 'alive' });
  t.is(reply!.text, 'alive');
  await tail.next((r) => r['rpc.method'] === 'Unary');
  const metrics = await scrape(sidecar.ports.admin);
  t.is(metricValue(metrics, 'auditmesh_requests_total', { protocol: 'grpc', grpc_status: '0' }), 1);
});
