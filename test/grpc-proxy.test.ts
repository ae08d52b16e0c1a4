import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import http2 from 'node:http2';
import { closeServer, listen, refusedPort } from './helpers/net.js';
import { followTail, startTestSidecar } from './helpers/sidecar.js';
import { echoClient, startEchoServer, unary, type EchoReply } from './helpers/grpc.js';

test('a unary call passes through with metadata (binary too) and trailers, and is recorded with method, status and message counts', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port, service: 'echo' });
  const tail = await followTail(t, sidecar.ports.admin);
  const client = echoClient(t, sidecar.ports.inbound!);
  const md = new grpc.Metadata();
  md.set('x-tenant', 'acme');
  md.set('x-blob-bin', Buffer.from([0, 1, 2, 255]));
  const { reply, error, trailers } = await unary(client, { text: 'hi', reply_bytes: 10 }, { metadata: md });
  t.is(error, undefined);
  t.is(reply!.text, 'hi');
  t.is(reply!.payload.length, 10);
  t.deepEqual(trailers!.get('x-trailer'), ['done']);
  const seen = upstream.log.metadata[0]!;
  t.deepEqual(seen.get('x-tenant'), ['acme']);
  t.deepEqual(seen.get('x-blob-bin'), [Buffer.from([0, 1, 2, 255])]);
  t.truthy(seen.get('traceparent')[0]);

  const rec = await tail.next((r) => r['rpc.method'] === 'Unary');
  t.is(rec['audit.kind'], 'grpc');
  t.is(rec['network.protocol.version'], '2');
  t.is(rec['rpc.system'], 'grpc');
  t.is(rec['rpc.service'], 'test.Echo');
  t.is(rec['rpc.grpc.status_code'], 0);
  t.is(rec['audit.messages_in'], 1);
  t.is(rec['audit.messages_out'], 1);
  t.is(rec['http.response.status_code'], 200);
  t.is(rec['trace.id'], String(seen.get('traceparent')[0]).split('-')[1]);
  t.true(rec['audit.ttfb_ms']! <= rec['audit.duration_ms']!);
});

test('an error status from the upstream reaches the client and the record, with its message', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const { error } = await unary(echoClient(t, sidecar.ports.inbound!), { text: 'bad arg', status: grpc.status.INVALID_ARGUMENT });
  t.is(error!.code, grpc.status.INVALID_ARGUMENT);
  t.regex(error!.details, /failed on purpose: bad arg/);
  const rec = await tail.next((r) => r['rpc.method'] === 'Unary');
  t.is(rec['rpc.grpc.status_code'], grpc.status.INVALID_ARGUMENT);
  t.is(rec['rpc.grpc.status_message'], 'failed on purpose: bad arg');
});

// Serial: the client, the sidecar and the upstream share this file's event loop, and the
// sidecar tells a cancel at the deadline from a change of mind by its own clock (started when it
// gets to the stream, with 100 ms or a quarter of the deadline as slack). Beside this file's
// 5 MB and 10,000-message streams it once got to the stream more than 100 ms after the client
// had started its 300 ms deadline, and the cancel was recorded as `aborted`. Alone in the file,
// with a 600 ms deadline (150 ms of slack), it waits for the call without that neighbourhood.
test.serial('a deadline exceeded in the upstream: the client gets DEADLINE_EXCEEDED, the upstream sees the cancellation', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const client = echoClient(t, sidecar.ports.inbound!);
  // Connect first: on a loaded machine, connecting could use up the whole deadline before the
  // call ever reaches the sidecar (grpc-js then fails it locally, and there is nothing to proxy).
  t.is((await unary(client, { text: 'warm-up' })).error, undefined);
  const md = new grpc.Metadata();
  md.set('x-request-id', 'deadline-call');
  const { error } = await unary(client, { text: 'slow', delay_ms: 3000 }, { deadlineMs: 600, metadata: md });
  t.is(error!.code, grpc.status.DEADLINE_EXCEEDED);
  const rec = await tail.next((r) => r['audit.request_id'] === 'deadline-call');
  t.true(rec['audit.duration_ms']! < 2000, `recorded after ${rec['audit.duration_ms']} ms`);
  t.is(rec['error.type'], 'timeout', 'the client reset the stream at its deadline');
  // The upstream learns of it (cancel propagated) well before it would have answered.
  const until = Date.now() + 2000;
  while (!upstream.log.cancelled.includes('Unary') && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.true(upstream.log.cancelled.includes('Unary'));
});

test('an unreachable upstream gives UNAVAILABLE at once (trailers-only), never a hang, and is recorded as refused', async (t) => {
  const port = await refusedPort();
  const sidecar = await startTestSidecar(t, { appPort: port });
  const tail = await followTail(t, sidecar.ports.admin);
  const { error } = await unary(echoClient(t, sidecar.ports.inbound!), { text: 'x' }, { deadlineMs: 5000 });
  t.is(error!.code, grpc.status.UNAVAILABLE);
  t.regex(error!.details, /auditmesh: upstream refused/);
  const rec = await tail.next((r) => r['rpc.method'] === 'Unary');
  t.is(rec['error.type'], 'refused');
  t.is(rec['rpc.grpc.status_code'], grpc.status.UNAVAILABLE);
});

test('server streaming: every message arrives and both counts are recorded', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const client = echoClient(t, sidecar.ports.inbound!);
  const got: number[] = [];
  await new Promise<void>((resolve, reject) => {
    const call = client.ServerStream!({ text: 's', count: 25 }) as grpc.ClientReadableStream<EchoReply>;
    call.on('data', (r: EchoReply) => got.push(r.index));
    call.on('end', resolve);
    call.on('error', reject);
  });
  t.deepEqual(got, Array.from({ length: 25 }, (_, i) => i));
  const rec = await tail.next((r) => r['rpc.method'] === 'ServerStream');
  t.is(rec['audit.messages_in'], 1);
  t.is(rec['audit.messages_out'], 25);
  t.is(rec['rpc.grpc.status_code'], 0);
});

test('client streaming and bidirectional streaming pass every message both ways', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const client = echoClient(t, sidecar.ports.inbound!);
  const summary = await new Promise<EchoReply>((resolve, reject) => {
    const call = client.ClientStream!((err: grpc.ServiceError | null, r: EchoReply) => (err ? reject(err) : resolve(r))) as grpc.ClientWritableStream<unknown>;
    for (let i = 0; i < 40; i++) call.write({ text: `m${i}` });
    call.end();
  });
  t.is(summary.text, '40:m39');
  const echoes = await new Promise<number>((resolve, reject) => {
    const call = client.Bidi!() as grpc.ClientDuplexStream<unknown, EchoReply>;
    let n = 0;
    call.on('data', () => n++);
    call.on('end', () => resolve(n));
    call.on('error', reject);
    for (let i = 0; i < 30; i++) call.write({ text: `b${i}` });
    call.end();
  });
  t.is(echoes, 30);
  const cs = await tail.next((r) => r['rpc.method'] === 'ClientStream');
  t.is(cs['audit.messages_in'], 40);
  t.is(cs['audit.messages_out'], 1);
  const bidi = await tail.next((r) => r['rpc.method'] === 'Bidi');
  t.is(bidi['audit.messages_in'], 30);
  t.is(bidi['audit.messages_out'], 30);
});

test('a client cancelling mid-stream cancels the upstream call and is recorded as aborted', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const client = echoClient(t, sidecar.ports.inbound!);
  const code = await new Promise<number>((resolve) => {
    const call = client.ServerStream!({ text: 'c', count: 1000, delay_ms: 10 }) as grpc.ClientReadableStream<EchoReply>;
    let n = 0;
    call.on('data', () => {
      if (++n === 3) call.cancel();
    });
    call.on('error', (e: grpc.ServiceError) => resolve(e.code));
  });
  t.is(code, grpc.status.CANCELLED);
  const rec = await tail.next((r) => r['rpc.method'] === 'ServerStream');
  t.is(rec['error.type'], 'aborted');
  t.true(rec['audit.messages_out']! >= 3 && rec['audit.messages_out']! < 1000);
  const until = Date.now() + 2000;
  while (!upstream.log.cancelled.includes('ServerStream') && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  t.true(upstream.log.cancelled.includes('ServerStream'), 'upstream saw the cancellation');
});

test('the upstream going away mid-stream ends the call with an error, never a clean end', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const client = echoClient(t, sidecar.ports.inbound!);
  const outcome = await new Promise<string>((resolve) => {
    const call = client.ServerStream!({ text: 'g', count: 1000, delay_ms: 10 }) as grpc.ClientReadableStream<EchoReply>;
    let n = 0;
    call.on('data', () => {
      if (++n === 3) upstream.server.forceShutdown();
    });
    call.on('end', () => resolve('clean end'));
    call.on('error', (e: grpc.ServiceError) => resolve(grpc.status[e.code]!));
  });
  t.not(outcome, 'clean end');
  t.not(outcome, 'OK');
  const rec = await tail.next((r) => r['rpc.method'] === 'ServerStream');
  t.truthy(rec['error.type'] ?? (rec['rpc.grpc.status_code'] !== 0 ? 'status' : undefined), JSON.stringify(rec));
});

test('large messages (5 MB each way) pass through', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const big = Buffer.alloc(5 * 1024 * 1024, 1);
  const { reply, error } = await unary(echoClient(t, sidecar.ports.inbound!), { text: 'big', payload: big, reply_bytes: 5 * 1024 * 1024 });
  t.is(error, undefined);
  t.is(reply!.payload.length, 5 * 1024 * 1024);
  const rec = await tail.next((r) => r['rpc.method'] === 'Unary');
  t.true(rec['http.request.body.size']! > 5 * 1024 * 1024);
  t.true(rec['http.response.body.size']! > 5 * 1024 * 1024);
});

test('a long stream (10,000 messages each way) with a slow reader: flow control reaches the upstream, nothing is lost', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const client = echoClient(t, sidecar.ports.inbound!);
  const N = 10_000;
  const received = await new Promise<number>((resolve, reject) => {
    const call = client.Bidi!() as grpc.ClientDuplexStream<unknown, EchoReply>;
    let n = 0;
    call.on('data', () => {
      n++;
      // A slow reader: pause now and then, long enough for windows to fill.
      if (n % 2000 === 0) {
        call.pause();
        setTimeout(() => call.resume(), 150);
      }
    });
    call.on('end', () => resolve(n));
    call.on('error', reject);
    let i = 0;
    const pump = (): void => {
      while (i < N) {
        if (!call.write({ text: `m${i++}`, reply_bytes: 1024 })) return void call.once('drain', pump);
      }
      call.end();
    };
    pump();
  });
  t.is(received, N);
  t.is(upstream.log.received, N);
  t.true(upstream.log.writesBlocked > 0, 'the upstream felt backpressure from the slow reader through the sidecar');
  const rec = await tail.next((r) => r['rpc.method'] === 'Bidi', 10_000);
  t.is(rec['audit.messages_in'], N);
  t.is(rec['audit.messages_out'], N);
});

test('outbound gRPC is routed by :authority and records the peer service', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { service: 'checkout', resolve: new Map([['pricing:50051', { host: '127.0.0.1', port: upstream.port }]]) });
  const tail = await followTail(t, sidecar.ports.admin);
  const client = echoClient(t, sidecar.ports.outbound, { 'grpc.default_authority': 'pricing:50051' });
  const { reply } = await unary(client, { text: 'price?' });
  t.is(reply!.text, 'price?');
  t.deepEqual(upstream.log.metadata[0]!.get('x-auditmesh-client'), ['checkout']);
  const rec = await tail.next((r) => r['rpc.method'] === 'Unary');
  t.is(rec['audit.direction'], 'outbound');
  t.is(rec['peer.service'], 'pricing');
  t.is(rec['server.port'], 50051);
});

test('interim records mark a long-lived stream while it runs, tied to its final record', async (t) => {
  const upstream = await startEchoServer(t);
  const sidecar = await startTestSidecar(t, { appPort: upstream.port, interimRecordMs: 100 });
  const tail = await followTail(t, sidecar.ports.admin);
  const client = echoClient(t, sidecar.ports.inbound!);
  await new Promise<void>((resolve, reject) => {
    const call = client.ServerStream!({ text: 'long', count: 20, delay_ms: 25 }) as grpc.ClientReadableStream<EchoReply>;
    call.on('data', () => {});
    call.on('end', resolve);
    call.on('error', reject);
  });
  const final = await tail.next((r) => r['rpc.method'] === 'ServerStream' && r['audit.phase'] === 'final');
  const interims = tail.records.filter((r) => r['audit.phase'] === 'interim' && r['audit.request_id'] === final['audit.request_id']);
  t.true(interims.length >= 2, `${interims.length} interim records`);
  t.deepEqual(
    interims.map((r) => r['audit.interim_index']),
    interims.map((_, i) => i),
  );
  t.is(final['audit.interim_index'], interims.length);
  t.true(interims[0]!['audit.messages_out']! < final['audit.messages_out']!);
});

test('an upstream that sends GOAWAY after every few streams fails no call: new calls move to a new session', async (t) => {
  // A raw HTTP/2 gRPC upstream: answers each call with an empty message and OK, and asks its
  // client to go away after every third stream, as a server rolling its connections does.
  const upstream = http2.createServer();
  let sessions = 0;
  const open = new Set<http2.ServerHttp2Session>();
  upstream.on('session', (session) => {
    sessions++;
    open.add(session);
    let streams = 0;
    session.on('error', () => {});
    session.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.alloc(5));
      if (++streams === 3) session.goaway(http2.constants.NGHTTP2_NO_ERROR);
    });
  });
  const port = await listen(upstream);
  // An http2 server's close() waits for its sessions: end them first.
  t.teardown(() => (open.forEach((s) => s.destroy()), closeServer(upstream)));
  const sidecar = await startTestSidecar(t, { appPort: port });
  const client = echoClient(t, sidecar.ports.inbound!);
  const results = [];
  for (let i = 0; i < 12; i++) results.push(await unary(client, { text: `g${i}` }));
  t.deepEqual(
    results.map((r) => r.error?.code ?? 0),
    new Array(12).fill(0),
  );
  t.true(sessions >= 4, `${sessions} upstream sessions`);
});
