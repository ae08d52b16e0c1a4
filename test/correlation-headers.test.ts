import test from 'ava';
import { request, startUpstream } from './helpers/net.js';
import { followTail, startTestSidecar } from './helpers/sidecar.js';
import { parseTraceparent } from '../proxy/correlation/traceparent.js';

const VALID = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

test('parseTraceparent accepts the W3C example and rejects malformed values without throwing', (t) => {
  t.deepEqual(parseTraceparent(VALID), { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', parentId: '00f067aa0ba902b7', flags: '01' });
  for (const bad of [
    undefined,
    '',
    'garbage',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra',
    'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
    '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
  ]) {
    t.is(parseTraceparent(bad), null, String(bad));
  }
  t.not(parseTraceparent('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future'), null);
});

test('forwards a valid traceparent unchanged and records its trace id', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const tail = await followTail(t, sidecar.ports.admin);
  await request(sidecar.ports.inbound!, { path: '/tp', headers: { traceparent: VALID } });
  t.is(app.seen[0]!.headers.traceparent, VALID);
  const rec = await tail.next((r) => r['url.path'] === '/tp');
  t.is(rec['trace.id'], '4bf92f3577b34da6a3ce929d0e0e4736');
  t.is(rec['audit.claimed.traceparent'], undefined);
});

test('generates a traceparent when absent', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const tail = await followTail(t, sidecar.ports.admin);
  await request(sidecar.ports.inbound!, { path: '/none' });
  const sent = parseTraceparent(app.seen[0]!.headers.traceparent);
  t.not(sent, null);
  const rec = await tail.next((r) => r['url.path'] === '/none');
  t.is(rec['trace.id'], sent!.traceId);
  t.is(rec['span.id'], sent!.parentId);
});

test('replaces a malformed traceparent and keeps the original in the record as claimed', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const tail = await followTail(t, sidecar.ports.admin);
  await request(sidecar.ports.inbound!, { path: '/bad-tp', headers: { traceparent: '00-zzzz-bad' } });
  const sent = app.seen[0]!.headers.traceparent as string;
  t.not(parseTraceparent(sent), null);
  t.not(sent, '00-zzzz-bad');
  const rec = await tail.next((r) => r['url.path'] === '/bad-tp');
  t.is(rec['audit.claimed.traceparent'], '00-zzzz-bad');
  t.is(rec['trace.id'], parseTraceparent(sent)!.traceId);
});

test('forwards x-request-id when present and returns it on the response', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const reply = await request(sidecar.ports.inbound!, { path: '/rid', headers: { 'x-request-id': 'req-123' } });
  t.is(app.seen[0]!.headers['x-request-id'], 'req-123');
  t.is(reply.headers['x-request-id'], 'req-123');
  const rec = await tail.next((r) => r['url.path'] === '/rid');
  t.is(rec['audit.request_id'], 'req-123');
});

test('generates x-request-id when absent, the same one for the app, the response and the record', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port });
  const tail = await followTail(t, sidecar.ports.admin);
  const reply = await request(sidecar.ports.inbound!, { path: '/gen' });
  const id = String(reply.headers['x-request-id']);
  t.regex(String(id), /^[0-9a-f-]{36}$/);
  t.is(app.seen[0]!.headers['x-request-id'], id);
  const rec = await tail.next((r) => r['url.path'] === '/gen');
  t.is(rec['audit.request_id'], id);
});
