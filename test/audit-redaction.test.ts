import test from 'ava';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request, startUpstream } from './helpers/net.js';
import { followTail, scrape, tempDir } from './helpers/sidecar.js';
import { sidecarConfig } from '../proxy/config.js';
import { startSidecar } from '../proxy/sidecar.js';
import { createLogger } from '../command/log.js';

const CANARY = 'canary-s3cr3t-4f1d2e';

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

test('secrets never appear in clear in the journal files, the logs or /metrics; equal secrets share a fingerprint', async (t) => {
  const app = await startUpstream((_req, res) => {
    res.setHeader('set-cookie', `session=${CANARY}; HttpOnly`);
    res.end('ok');
  });
  t.teardown(app.close);
  const dir = await tempDir(t);
  const logs: string[] = [];
  const sidecar = await startSidecar(
    sidecarConfig({ service: 'vault', appPort: app.port, journalDir: join(dir, 'journal'), keyFile: join(dir, 'k'), redactionKeyFile: join(dir, 'rk'), logLevel: 'info' }),
    createLogger('info', (line) => logs.push(line)),
  );
  t.teardown(() => sidecar.close());
  const tail = await followTail(t, sidecar.ports.admin);

  for (const path of ['/a', '/b']) {
    await request(sidecar.ports.inbound!, {
      path: `${path}?token=${CANARY}&page=2`,
      headers: { authorization: `Bearer ${CANARY}`, cookie: `sid=${CANARY}`, 'proxy-authorization': `Basic ${CANARY}`, 'x-api-key': CANARY },
    });
  }
  const a = await tail.next((r) => r['url.path'] === '/a');
  const b = await tail.next((r) => r['url.path'] === '/b');
  // The app still gets its credentials: redaction is of the record, not the traffic.
  t.is(app.seen[0]!.headers.authorization, `Bearer ${CANARY}`);
  t.regex(a['http.request.header']!.authorization!, /^hmac-sha256:[0-9a-f]{32}$/);
  t.is(a['http.request.header']!.authorization, b['http.request.header']!.authorization);
  t.regex(a['url.query']!, /^token=hmac-sha256:[0-9a-f]{32}&page=2$/);
  t.regex(a['http.response.header']!['set-cookie']!, /^hmac-sha256:/);

  await sidecar.close();
  const metrics = await scrape(sidecar.ports.admin).catch(() => '');
  for (const file of await filesUnder(join(dir, 'journal'))) {
    const bytes = await readFile(file);
    t.false(bytes.includes(CANARY), `canary in clear in ${file}`);
    t.false(bytes.includes(Buffer.from(CANARY, 'utf16le')), `canary (utf-16) in ${file}`);
  }
  t.true(logs.length > 0);
  t.false(logs.join('').includes(CANARY), 'canary in the logs');
  t.false(metrics.includes(CANARY), 'canary in /metrics');
  t.false(JSON.stringify(tail.records).includes(CANARY), 'canary in the tail stream');
});

test('the metrics of a sidecar under secret-bearing traffic hold no secret (scraped live)', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const dir = await tempDir(t);
  const sidecar = await startSidecar(sidecarConfig({ appPort: app.port, journalDir: join(dir, 'j'), keyFile: join(dir, 'k'), redactionKeyFile: join(dir, 'rk') }));
  t.teardown(() => sidecar.close());
  await request(sidecar.ports.inbound!, { path: `/${CANARY}?password=${CANARY}`, headers: { authorization: CANARY, cookie: `a=${CANARY}` } });
  const text = await scrape(sidecar.ports.admin);
  t.regex(text, /auditmesh_requests_total/);
  t.false(text.includes(CANARY));
});
