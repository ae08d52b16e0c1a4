import test from 'ava';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import tls from 'node:tls';
import { fetch as undiciFetch } from 'undici';
import { runCli, startCli } from './helpers/child.js';
import type { TestCollector } from './helpers/collector.js';
import { createTokenIssuer, startIdentityCollector, startIdentitySidecar } from './helpers/identity.js';
import { eventually } from './helpers/shipping.js';
import { tempDir } from './helpers/sidecar.js';

// With workload identity on, the collector's HTTP API serves HTTPS with its serving certificate
// from the mesh CA (the key that serves gRPC and signs acks), renewed with it; reads need a bearer
// credential, health and metrics stay open; `auditmesh query` and `tail` read it with --ca-file.

/** The certificate the HTTP API presents to a new TLS handshake, trusting the collector's mesh CA. */
function presented(c: TestCollector): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: c.httpPort, ca: c.ca!.certPem, servername: 'localhost' }, () => {
      const cert = new X509Certificate(socket.getPeerCertificate().raw);
      socket.destroy();
      resolve(cert);
    });
    socket.on('error', reject);
  });
}

test('with workload identity the API serves HTTPS with the serving certificate: /metrics, /livez, /readyz open, /v1/ needs a reader credential', async (t) => {
  const collector = await startIdentityCollector(t, await createTokenIssuer());
  t.regex(collector.httpUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
  const cert = await presented(collector);
  t.true(cert.verify(new X509Certificate(collector.ca!.certPem).publicKey), 'issued by the mesh CA');
  t.true(cert.publicKey.equals(createPublicKey(collector.serving!.privateKey)), 'for the serving key');
  for (const path of ['/metrics', '/livez', '/readyz']) t.is((await collector.get(path)).status, 200, path);
  t.is((await collector.get('/v1/records')).status, 401);
  t.is((await collector.get('/v1/records', collector.readAuth)).status, 200);
  await t.throwsAsync(undiciFetch(collector.httpUrl + '/livez'), undefined, 'a client that does not trust the mesh CA gets no answer');
  await t.throwsAsync(undiciFetch(collector.httpUrl.replace('https', 'http') + '/livez'), undefined, 'no plaintext on the TLS port');
});

test('new HTTPS handshakes take the renewed serving certificate', async (t) => {
  // Renewed at half-life (5 s): a 3 s certificate (2 s once notAfter is floored to the second) expired under load before its renewal ran.
  const collector = await startIdentityCollector(t, await createTokenIssuer(), { identity: { caDir: join(await tempDir(t), 'ca'), createCa: true, certTtlMs: 10_000 } });
  const first = await presented(collector);
  let next = first;
  await eventually('another certificate presented', async () => (next = await presented(collector)).serialNumber !== first.serialNumber);
  t.true(next.publicKey.equals(first.publicKey), 'the same key, renewed');
  t.true(Date.parse(next.validTo) > Date.parse(first.validTo));
  t.is((await collector.get('/livez')).status, 200);
});

test('auditmesh query and tail read the HTTPS API with --ca-file and a reader token; without --ca-file they exit 2 saying to give it', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const s = await startIdentitySidecar(t, collector, issuer);
  t.is(await s.send('over-https'), 200);
  await eventually('the record stored', async () => (await (await collector.get('/v1/records?limit=10', collector.readAuth)).text()).includes('over-https'));
  const url = collector.httpUrl;
  const tokenOnly = collector.readerArgs.slice(0, collector.readerArgs.indexOf('--ca-file'));
  t.deepEqual(tokenOnly.slice(0, 1), ['--token-file']);

  const query = await runCli(['query', '--collector', url, ...collector.readerArgs, '-o', 'json']);
  t.is(query.code, 0, query.stderr);
  t.deepEqual(query.stdout.split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as Record<string, string>)['audit.request_id']), ['over-https']);

  const untrusted = await runCli(['query', '--collector', url, ...tokenOnly]);
  t.is(untrusted.code, 2, untrusted.stderr);
  t.regex(untrusted.stderr, /auditmesh query: the collector's HTTPS certificate is not trusted \(SELF_SIGNED_CERT_IN_CHAIN: .*\); give --ca-file FILE with the mesh CA bundle/);
  const plain = await runCli(['query', '--collector', url.replace('https', 'http'), ...collector.readerArgs]);
  t.is(plain.code, 1, plain.stderr);
  t.regex(plain.stderr, /auditmesh query: cannot reach http:\/\/127\.0\.0\.1:\d+: .*try https:\/\//);
  const tailUntrusted = await runCli(['tail', '--collector', url, ...tokenOnly]);
  t.is(tailUntrusted.code, 2, tailUntrusted.stderr);
  t.regex(tailUntrusted.stderr, /auditmesh tail: the collector's HTTPS certificate is not trusted .*give --ca-file FILE/);

  const tail = startCli(t, ['tail', '--collector', url, ...collector.readerArgs, '-o', 'json']);
  // The subscription is open once the collector counts the listener; then a new record streams.
  await eventually('tail subscribed', () => collector.liveListeners > 0);
  t.is(await s.send('tailed-over-https'), 200);
  const [line] = await tail.waitFor(/^\{.*"audit\.request_id":"tailed-over-https".*\}$/m, 60_000);
  const tailed = JSON.parse(line!) as Record<string, unknown>;
  t.is(tailed['audit.request_id'], 'tailed-over-https');
  t.is(tailed['audit.direction'], 'inbound', 'the record the sidecar stored, streamed over HTTPS as JSON');
});
