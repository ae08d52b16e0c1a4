import test from 'ava';
import http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { rawExchange, request, startUpstream } from './helpers/net.js';
import { metricValue, scrape, startTestSidecar } from './helpers/sidecar.js';
import { echoClient, unary } from './helpers/grpc.js';

const LIMIT_BYTES = 256 * 1024;
const LONG = '/fill/' + 'x'.repeat(2000);

test('reject at the bound holds on every path: gRPC gets UNAVAILABLE, CONNECT 503, opaque TCP is closed, all counted', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port, journalLimitBytes: LIMIT_BYTES, onJournalFull: 'reject', journalRetentionMs: 0, checkpointIntervalMs: 100 });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  for (let i = 0; metricValue(await scrape(sidecar.ports.admin), 'auditmesh_journal_full') !== 1; ) {
    if (i > 2000) throw new Error('the journal never reported full');
    await Promise.all(Array.from({ length: 8 }, () => request(sidecar.ports.inbound!, { path: `${LONG}?i=${i++}`, agent })));
  }
  const before = metricValue(await scrape(sidecar.ports.admin), 'auditmesh_journal_rejected_total');

  const { error } = await unary(echoClient(t, sidecar.ports.inbound!), { text: 'refused' });
  t.is(error?.code, grpc.status.UNAVAILABLE);
  t.regex(error!.details, /audit journal full/);
  const connect = await rawExchange(sidecar.ports.outbound, 'CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: x\r\n\r\n');
  t.regex(connect, /^HTTP\/1\.1 503/);
  t.regex(connect, /x-auditmesh-error: AUDITMESH_JOURNAL_WRITE/);
  const tcp = await rawExchange(sidecar.ports.inbound!, 'not http at all\n');
  t.is(tcp, '', 'an opaque connection is closed without reaching the app');

  t.is(metricValue(await scrape(sidecar.ports.admin), 'auditmesh_journal_rejected_total'), before + 3);
});
