import test from 'ava';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { echoClient, startEchoServer, unary } from './helpers/grpc.js';
import { SECRET, SECRET_PATHS, assertSound, recordOf, startHostile } from './helpers/hostile.js';
import { FLAG, FRAME, closedWithin, echoRequest, frame, grpcMessage, grpcRequestBlock, headerBlock, rawH2 } from './helpers/h2-frames.js';
import type { SidecarConfig } from '../proxy/config.js';

// Hostile HTTP/2 and gRPC input (issue 8). Floods end the offending session (or are throttled by
// node:http2's own guards) while other clients are served; resets reach the upstream; malformed
// and oversized gRPC framing ends the call with a status. Every case ends in assertSound.

const AUTH: [string, string] = ['authorization', `Bearer ${SECRET}`];
const { NGHTTP2_CANCEL } = http2.constants;

async function grpcSidecar(t: ExecutionContext, overrides: Partial<SidecarConfig> = {}) {
  const upstream = await startEchoServer(t);
  const h = await startHostile(t, { port: upstream.port, kind: 'grpc' }, overrides);
  return { h, upstream, port: h.sidecar.ports.inbound! };
}

test.serial('rapid reset (CVE-2023-44487): 10,000 streams opened and reset at once; the session ends or is bounded, the upstream sees a bounded few', async (t) => {
  const { h, upstream, port } = await grpcSidecar(t);
  const raw = await rawH2(port);
  t.teardown(() => raw.socket.destroy());
  const block = grpcRequestBlock('Unary', [AUTH]);
  const burst: Buffer[] = [];
  for (let id = 1; id < 20_000; id += 2) burst.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, block), frame(FRAME.RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])));
  raw.send(Buffer.concat(burst));
  const closed = await closedWithin(raw, 5000);
  const goaway = raw.frames.find((f) => f.type === FRAME.GOAWAY);
  t.log(closed ? `session closed${goaway ? `, GOAWAY code ${goaway.payload.readUInt32BE(4)}` : ''}` : 'session still open');
  // Whatever got through before a reset was cancelled upstream, never left running.
  t.true(upstream.log.metadata.length < 1000, `${upstream.log.metadata.length} calls reached the upstream`);
  await assertSound(t, h);
});

test.serial('MadeYouReset (CVE-2025-8671): streams the sidecar itself resets on a client protocol error are cancelled upstream, not left running', async (t) => {
  const { h, upstream, port } = await grpcSidecar(t);
  const raw = await rawH2(port);
  t.teardown(() => raw.socket.destroy());
  const STREAMS = 20;
  for (let i = 0; i < STREAMS; i++) {
    const id = 1 + 2 * i;
    // A long server stream, then a WINDOW_UPDATE of 0 on it: a stream error the sidecar answers with RST_STREAM.
    raw.send(Buffer.concat([frame(FRAME.HEADERS, FLAG.END_HEADERS, id, grpcRequestBlock('ServerStream', [AUTH])), frame(FRAME.DATA, FLAG.END_STREAM, id, grpcMessage(echoRequest({ text: 'long', count: 100_000, delayMs: 20 })))]));
  }
  await waitUntil(() => upstream.log.metadata.length === STREAMS, 'every stream reached the upstream');
  for (let i = 0; i < STREAMS; i++) raw.send(frame(FRAME.WINDOW_UPDATE, 0, 1 + 2 * i, Buffer.from([0, 0, 0, 0])));
  await raw.next((f) => f.type === FRAME.RST_STREAM || f.type === FRAME.GOAWAY);
  await waitUntil(() => upstream.log.cancelled.length === STREAMS, 'the upstream saw every call cancelled');
  t.is(upstream.log.cancelled.length, STREAMS);
  const rec = await recordOf(h, (r) => r['rpc.method'] === 'ServerStream');
  t.truthy(rec['error.type'], 'the reset stream is recorded with how it ended');
  await assertSound(t, h);
});

test.serial('a CONTINUATION flood (CVE-2024-27983) ends the session without buffering it, and others are served', async (t) => {
  const { h, port } = await grpcSidecar(t);
  const raw = await rawH2(port);
  t.teardown(() => raw.socket.destroy());
  raw.send(frame(FRAME.HEADERS, 0, 1, grpcRequestBlock('Unary', [AUTH])));
  const fragment = headerBlock([['x-flood', 'a'.repeat(100)]]);
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => frame(FRAME.CONTINUATION, 0, 1, fragment)));
  for (let i = 0; i < 100 && !raw.socket.destroyed; i++) raw.send(batch);
  t.true(await closedWithin(raw, 10_000), 'the flooding session was closed');
  await assertSound(t, h);
});

const FLOODS: Array<[string, Buffer]> = [
  ['a SETTINGS flood', frame(FRAME.SETTINGS, 0, 0, Buffer.from([0, 3, 0, 0, 0, 100]))],
  ['a PING flood', frame(FRAME.PING, 0, 0, Buffer.alloc(8, 1))],
];

for (const [name, one] of FLOODS) {
  test.serial(`${name} from a client that never reads the acks ends or throttles the session; other clients are served`, async (t) => {
    const { h, port } = await grpcSidecar(t);
    const raw = await rawH2(port);
    t.teardown(() => raw.socket.destroy());
    raw.socket.pause();
    const flood = Buffer.concat(Array.from({ length: 2000 }, () => one));
    for (let i = 0; i < 500 && !raw.socket.destroyed; i++) raw.send(flood);
    const closed = await closedWithin(raw, 5000);
    // Either bound is fine: the session is closed, or node:http2 stops reading it, so the flood
    // backs up on the attacker's side instead of in the sidecar's memory.
    t.true(closed || raw.socket.writableLength > 1024 * 1024, 'the sidecar kept reading and queueing the flood');
    await assertSound(t, h);
  });
}

const WINDOW_ABUSE: Array<[string, Buffer]> = [
  ['a WINDOW_UPDATE of 0 on the connection', frame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.from([0, 0, 0, 0]))],
  ['WINDOW_UPDATEs that overflow the connection window past 2^31-1', Buffer.concat([frame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.from([0x7f, 0xff, 0xff, 0xff])), frame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.from([0x7f, 0xff, 0xff, 0xff]))])],
  ['a WINDOW_UPDATE on a stream that was never opened', frame(FRAME.WINDOW_UPDATE, 0, 99, Buffer.from([0, 0, 1, 0]))],
];

for (const [name, bytes] of WINDOW_ABUSE) {
  test.serial(`window-update abuse, ${name}: a connection error (GOAWAY), and the sidecar keeps serving`, async (t) => {
    const { h, port } = await grpcSidecar(t);
    const raw = await rawH2(port);
    t.teardown(() => raw.socket.destroy());
    raw.send(bytes);
    const goaway = await raw.next((f) => f.type === FRAME.GOAWAY);
    t.not(goaway.payload.readUInt32BE(4), 0, 'GOAWAY with an error code');
    t.true(await closedWithin(raw, 10_000));
    await assertSound(t, h);
  });
}

test.serial('a flood of tiny WINDOW_UPDATEs is absorbed or ends the session, and the sidecar keeps serving', async (t) => {
  const { h, port } = await grpcSidecar(t);
  const raw = await rawH2(port);
  t.teardown(() => raw.socket.destroy());
  const tiny = Buffer.concat(Array.from({ length: 5000 }, () => frame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.from([0, 0, 0, 1]))));
  for (let i = 0; i < 40 && !raw.socket.destroyed; i++) raw.send(tiny);
  await closedWithin(raw, 2000);
  await assertSound(t, h);
});

/** A gRPC call sent through node:http2 with DATA bytes chosen by the test; resolves with how it ended. */
function rawGrpcCall(port: number, data: Buffer, headers: http2.OutgoingHttpHeaders = {}): Promise<{ status?: string; rst?: number; message?: string }> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    const stream = session.request({ ':method': 'POST', ':path': '/test.Echo/Unary', 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${SECRET}`, ...headers });
    let status: string | undefined;
    let message: string | undefined;
    stream.on('response', (h) => ((status ??= h['grpc-status'] as string | undefined), (message ??= h['grpc-message'] as string | undefined)));
    stream.on('trailers', (h) => ((status = h['grpc-status'] as string | undefined), (message = h['grpc-message'] as string | undefined)));
    stream.on('error', () => {});
    stream.on('data', () => {});
    stream.on('close', () => {
      resolve({ status, rst: stream.rstCode, message });
      session.close();
    });
    stream.end(data);
  });
}

const MALFORMED: Array<[string, Buffer]> = [
  ['a compressed flag with no grpc-encoding', grpcMessage(echoRequest({ text: 'x' }), 1)],
  ['an undefined flag byte', grpcMessage(echoRequest({ text: 'x' }), 0x80)],
  ['a length prefix longer than the stream', Buffer.concat([Buffer.from([0, 0, 0, 0x10, 0]), Buffer.from('short')])],
  ['a prefix cut after three bytes', Buffer.from([0, 0, 0])],
  ['a 4 GiB declared length', Buffer.concat([Buffer.from([0, 0xff, 0xff, 0xff, 0xff]), Buffer.from('tiny')])],
];

for (const [name, data] of MALFORMED) {
  test.serial(`malformed gRPC framing, ${name}: the call ends with an error status, recorded; no crash`, async (t) => {
    const { h, port } = await grpcSidecar(t);
    const outcome = await rawGrpcCall(port, data);
    t.log(outcome);
    t.true((outcome.status !== undefined && outcome.status !== '0') || (outcome.rst ?? 0) !== 0, `the call ended OK: ${JSON.stringify(outcome)}`);
    const rec = await recordOf(h, (r) => r['rpc.method'] === 'Unary');
    t.true(rec['rpc.grpc.status_code'] !== 0 || rec['error.type'] !== undefined, JSON.stringify(rec));
    await assertSound(t, h);
  });
}

test.serial('a gRPC message over --max-grpc-message-bytes gets RESOURCE_EXHAUSTED, is recorded as rejected, and never reaches the upstream handler', async (t) => {
  const { h, upstream, port } = await grpcSidecar(t, { maxGrpcMessageBytes: 1024 });
  const client = echoClient(t, port);
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${SECRET}`);
  const small = await unary(client, { text: 'fits', payload: Buffer.alloc(900) }, { metadata });
  t.is(small.error, undefined);
  const big = await unary(client, { text: 'too big', payload: Buffer.alloc(4096) }, { metadata });
  t.is(big.error?.code, grpc.status.RESOURCE_EXHAUSTED);
  const rec = await recordOf(h, (r) => r['rpc.grpc.status_code'] === grpc.status.RESOURCE_EXHAUSTED);
  t.is(rec['error.type'], 'rejected');
  t.is(upstream.log.metadata.length, 1, 'only the call that fits reached the handler');
  // A raw declared length over the limit is refused on its prefix, before its payload.
  const declared = await rawGrpcCall(port, Buffer.from([0, 0, 1, 0, 0]));
  t.is(declared.status, String(grpc.status.RESOURCE_EXHAUSTED));
  await assertSound(t, h);
});

test.serial('a :path with raw non-ASCII and control bytes is refused by the HTTP/2 layer with a stream reset, and never forwarded', async (t) => {
  const { h, upstream, port } = await grpcSidecar(t);
  const raw = await rawH2(port);
  t.teardown(() => raw.socket.destroy());
  const block = headerBlock([[':method', 'POST'], [':scheme', 'http'], [':path', '/test.Echo/Un\xe9ry\x7f'], [':authority', 'x'], ['content-type', 'application/grpc'], AUTH]);
  raw.send(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, block));
  const answer = await raw.next((f) => (f.type === FRAME.HEADERS || f.type === FRAME.RST_STREAM) && f.streamId === 1);
  t.is(answer.type, FRAME.RST_STREAM);
  t.is(answer.payload.readUInt32BE(0), http2.constants.NGHTTP2_PROTOCOL_ERROR);
  t.is(upstream.log.metadata.length, 0);
  await assertSound(t, h);
});

test.serial('spoofed x-auditmesh-* metadata from outside is stripped before the upstream; the client claim is kept as claimed', async (t) => {
  const { h, upstream, port } = await grpcSidecar(t);
  const metadata = new grpc.Metadata();
  metadata.set('x-auditmesh-client', 'payments');
  metadata.set('x-auditmesh-error', 'AUDITMESH_OVERLOAD');
  metadata.set('authorization', `Bearer ${SECRET}`);
  const { error } = await unary(echoClient(t, port), { text: 'spoof' }, { metadata });
  t.is(error, undefined);
  t.deepEqual(Object.keys(upstream.log.metadata[0]!.getMap()).filter((k) => k.startsWith('x-auditmesh-')), []);
  const rec = await recordOf(h, (r) => r['rpc.method'] === 'Unary');
  t.is(rec['audit.claimed.client'], 'payments');
  await assertSound(t, h);
});

test.serial('credentials in an HTTP/2 :path and a JWT in gRPC metadata are fingerprinted in the record, and in the status message that quotes the path', async (t) => {
  const { h, port } = await grpcSidecar(t);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const jwt = `eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ${SECRET}In0.c2ln`;
  const stream = session.request({ ':method': 'POST', ':path': SECRET_PATHS.origin, 'content-type': 'application/grpc', te: 'trailers', 'user-agent': `probe/1.0 ${jwt}`, ...Object.fromEntries([AUTH]) });
  stream.on('error', () => {});
  stream.end(grpcMessage(echoRequest({ text: 'x' })));
  await new Promise((resolve) => stream.on('close', resolve));
  const rec = await recordOf(h, (r) => r['url.path']?.startsWith('/files/') === true);
  t.regex(rec['url.path']!, /^\/files\/hmac-sha256:[0-9a-f]{32}\/get$/);
  t.regex(rec['http.request.header']!['user-agent']!, /^probe\/1\.0 hmac-sha256:[0-9a-f]{32}$/);
  // grpc-js answers an unknown method with UNIMPLEMENTED and quotes its path.
  t.regex(rec['rpc.grpc.status_message']!, /\/files\/hmac-sha256:[0-9a-f]{32}\/get\?X-Amz-Signature=hmac-sha256:/);
  t.false(JSON.stringify(rec).includes(SECRET));
  await assertSound(t, h);
});

test.serial('a client cancelling many calls at once cancels each upstream; nothing is left running', async (t) => {
  const { h, upstream, port } = await grpcSidecar(t);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  const streams = Array.from({ length: 50 }, () => {
    const s = session.request({ ':method': 'POST', ':path': '/test.Echo/ServerStream', 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${SECRET}` });
    s.on('error', () => {});
    s.on('data', () => {});
    s.end(grpcMessage(echoRequest({ count: 100_000, delayMs: 20 })));
    return s;
  });
  await waitUntil(() => upstream.log.metadata.length === 50, 'all calls reached the upstream');
  for (const s of streams) s.close(NGHTTP2_CANCEL);
  await waitUntil(() => upstream.log.cancelled.length === 50, 'every upstream call was cancelled');
  t.is(upstream.log.cancelled.length, 50);
  await assertSound(t, h);
});

async function waitUntil(check: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > until) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
