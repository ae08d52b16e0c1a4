import test, { type ExecutionContext } from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { createWebhookCertificates } from '../control/install/webhook-certificates.js';
import { runCli } from './helpers/child.js';
import { followTail } from './helpers/tail.js';
import { startTestCollector, type TestCollector } from './helpers/collector.js';
import { eventually, startShippingSidecar, type ShippingSidecar } from './helpers/shipping.js';
import { metricValue, tempDir } from './helpers/sidecar.js';
import { createTokenIssuer, type TokenIssuer, type TokenSubject } from './cluster/token-issuer.js';

// Reads are authenticated and scoped (issue 24): a real collector, real sidecars shipping as
// `a/pod-1` and `b/pod-1`, reader tokens from a file and ServiceAccount tokens from a test issuer.

interface Mesh {
  c: TestCollector;
  a: ShippingSidecar;
  b: ShippingSidecar;
  issuer: TokenIssuer;
}

const READERS = 'tok-a a\ntok-all *\n';
const POLICY = 'readers:\n  - serviceAccount: a/auditor\n    namespaces: [a]\n  - serviceAccount: ops/*\n    namespaces: ["*"]\n';

async function mesh(t: ExecutionContext): Promise<Mesh> {
  const dir = await tempDir(t);
  const issuer = await createTokenIssuer();
  const jwks = join(dir, 'jwks.json');
  await writeFile(jwks, JSON.stringify(issuer.jwks()));
  await writeFile(join(dir, 'readers'), READERS);
  await writeFile(join(dir, 'policy.yaml'), POLICY);
  const c = await startTestCollector(t, { token: 'test-token', readerTokenFile: join(dir, 'readers'), readPolicy: join(dir, 'policy.yaml'), serviceAccounts: { jwks, issuer: issuer.issuer } });
  const a = await startShippingSidecar(t, c.grpcAddress, { service: 'alpha', sidecarId: 'a/pod-1' });
  const b = await startShippingSidecar(t, c.grpcAddress, { service: 'beta', sidecarId: 'b/pod-1' });
  return { c, a, b, issuer };
}

async function read(c: TestCollector, path: string, token?: string): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(c.httpUrl + path, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

const ids = (body: string): string[] => body.split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as Record<string, string>)['audit.request_id']).sort();

/** Sends one request through each sidecar and waits until the collector stores both. */
async function stored(m: Mesh, idA: string, idB: string): Promise<void> {
  await Promise.all([m.a.send(idA), m.b.send(idB)]);
  await eventually('both records stored', async () => ids((await read(m.c, '/v1/records?limit=1000', 'tok-all')).body).includes(idA) && ids((await read(m.c, '/v1/records?limit=1000', 'tok-all')).body).includes(idB));
}

const subject = (namespace: string, sa: string): TokenSubject => ({ namespace, pod: { name: `${sa}-0`, uid: 'u1' }, serviceAccount: { name: sa, uid: 'u2' } });

test('a reader scoped to namespace a reads only a; a * reader reads both; no credential is 401, a filter naming b is 403, each counted', async (t) => {
  const m = await mesh(t);
  await stored(m, 'req-a1', 'req-b1');
  t.deepEqual(ids((await read(m.c, '/v1/records?limit=1000', 'tok-all')).body), ['req-a1', 'req-b1']);
  t.deepEqual(ids((await read(m.c, '/v1/records?limit=1000', 'tok-a')).body), ['req-a1']);
  t.deepEqual(ids((await read(m.c, '/v1/records?namespace=a', 'tok-a')).body), ['req-a1']);
  t.deepEqual(ids((await read(m.c, '/v1/records?namespace=b', 'tok-all')).body), ['req-b1']);
  t.deepEqual(JSON.parse((await read(m.c, '/v1/sidecars', 'tok-a')).body).map((s: { id: string }) => s.id), ['a/pod-1']);

  const none = await read(m.c, '/v1/records');
  t.is(none.status, 401);
  t.regex(none.headers.get('www-authenticate') ?? '', /^Bearer /);
  t.regex(none.body, /^unauthorized: missing: /);
  const wrong = await read(m.c, '/v1/sidecars', 'not-a-reader');
  t.is(wrong.status, 401);
  t.regex(wrong.body, /unknown-token/);
  for (const path of ['/v1/records?namespace=b', '/v1/records?namespace=a,b', '/v1/tail?namespace=b', '/v1/anomalies']) {
    const refused = await read(m.c, path, 'tok-a');
    t.is(refused.status, 403, path);
    t.regex(refused.body, /^forbidden: out-of-scope: /, path);
  }
  t.is((await read(m.c, '/metrics')).status, 200, '/metrics stays open');
  t.is((await read(m.c, '/readyz')).status, 200, '/readyz stays open');
  const metrics = (await read(m.c, '/metrics')).body;
  t.is(metricValue(metrics, 'auditmesh_collector_read_refusals_total', { reason: 'missing' }), 1);
  t.is(metricValue(metrics, 'auditmesh_collector_read_refusals_total', { reason: 'unknown-token' }), 1);
  t.is(metricValue(metrics, 'auditmesh_collector_read_refusals_total', { reason: 'out-of-scope' }), 4);
});

/** Follows /v1/tail with `token`; the request ids of the records streamed, as they arrive. */
async function tailAs(t: ExecutionContext, c: TestCollector, token: string): Promise<{ includes(id: string): boolean; ids(): string[] }> {
  const seen = await followTail(t, c.httpUrl, token);
  const ids = (): string[] => seen.map((r) => r['audit.request_id'] as string);
  return { includes: (id) => ids().includes(id), ids };
}

test('/v1/tail streams a reader only the records of its namespaces', async (t) => {
  const m = await mesh(t);
  const all = await tailAs(t, m.c, 'tok-all');
  const onlyA = await tailAs(t, m.c, 'tok-a');
  await stored(m, 'req-a1', 'req-b1');
  await eventually('the * reader saw both', () => all.includes('req-a1') && all.includes('req-b1'));
  // The stream is ordered: once a later record of a arrives, any of b published before it would have too.
  await m.a.send('req-a2');
  await eventually('the a reader saw the later record', () => onlyA.includes('req-a2'));
  t.deepEqual(onlyA.ids().filter((id) => id !== undefined).sort(), ['req-a1', 'req-a2']);
});

test('ServiceAccount tokens with audience auditmesh-read read what the read policy grants; a wrong audience is 401 with the reason', async (t) => {
  const m = await mesh(t);
  await stored(m, 'req-a1', 'req-b1');
  const token = (ns: string, sa: string, audience = 'auditmesh-read'): Promise<string> => m.issuer.sign(subject(ns, sa), { audience, expirationSeconds: 600 });
  t.deepEqual(ids((await read(m.c, '/v1/records', await token('a', 'auditor'))).body), ['req-a1']);
  t.deepEqual(ids((await read(m.c, '/v1/records', await token('ops', 'grafana'))).body), ['req-a1', 'req-b1']);
  const wrongAudience = await read(m.c, '/v1/records', await token('ops', 'grafana', 'auditmesh'));
  t.is(wrongAudience.status, 401);
  t.regex(wrongAudience.body, /^unauthorized: wrong-audience: the token's audience is not "auditmesh-read"/);
  t.regex(wrongAudience.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  const ungranted = await read(m.c, '/v1/records', await token('c', 'nobody'));
  t.is(ungranted.status, 403);
  t.regex(ungranted.body, /not-granted: spiffe:\/\/cluster\.local\/ns\/c\/sa\/nobody may read no namespace/);
  const metrics = (await read(m.c, '/metrics')).body;
  t.is(metricValue(metrics, 'auditmesh_collector_read_refusals_total', { reason: 'wrong-audience' }), 1);
  t.is(metricValue(metrics, 'auditmesh_collector_read_refusals_total', { reason: 'not-granted' }), 1);
});

test('the reader token file is read again when it changes', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'readers');
  await writeFile(file, 'old-token *\n');
  const c = await startTestCollector(t, { readerTokenFile: file });
  t.is((await read(c, '/v1/sidecars', 'old-token')).status, 200);
  // A different mtime even on a coarse clock: the reload is by modification time.
  await new Promise((resolve) => setTimeout(resolve, 20));
  await writeFile(file, 'new-token a\n');
  t.is((await read(c, '/v1/sidecars', 'new-token')).status, 200);
  t.is((await read(c, '/v1/sidecars', 'old-token')).status, 401);
});

test('with a serving certificate the API speaks HTTPS, and reads still need the credential', async (t) => {
  const certs = await createWebhookCertificates(['localhost'], 1);
  const c = await startTestCollector(t, { httpTls: { key: certs.key, cert: certs.cert } });
  t.regex(c.httpUrl, /^https:\/\//);
  const dispatcher = new Agent({ connect: { ca: certs.caCert, servername: 'localhost' } });
  t.teardown(() => dispatcher.destroy());
  const get = (path: string, init: { headers?: Record<string, string> } = {}) => undiciFetch(c.httpUrl + path, { ...init, dispatcher });
  t.is((await get('/v1/sidecars', c.readAuth)).status, 200);
  t.is((await get('/v1/sidecars')).status, 401);
  t.is((await get('/livez')).status, 200);
  await t.throwsAsync(fetch(c.httpUrl.replace('https', 'http') + '/livez'), undefined, 'no plaintext on the TLS port');
});

test('under --insecure reads stay open and plain', async (t) => {
  const c = await startTestCollector(t, { token: null });
  t.regex(c.httpUrl, /^http:\/\//);
  t.is((await read(c, '/v1/records')).status, 200);
});

test('auditmesh query presents --token-file: a reader of a gets only a; no credential and a namespace outside the scope exit 2 saying why', async (t) => {
  const m = await mesh(t);
  await stored(m, 'req-a1', 'req-b1');
  const dir = await tempDir(t);
  await writeFile(join(dir, 'token-a'), 'tok-a\n');
  const scoped = await runCli(['query', '--collector', m.c.httpUrl, '--token-file', join(dir, 'token-a'), '-o', 'json']);
  t.is(scoped.code, 0, scoped.stderr);
  t.deepEqual(ids(scoped.stdout), ['req-a1']);
  const none = await runCli(['query', '--collector', m.c.httpUrl]);
  t.is(none.code, 2);
  t.regex(none.stderr, /the collector wants a reader credential \(401: unauthorized: missing: .*give --token-file FILE/);
  const outside = await runCli(['query', '--collector', m.c.httpUrl, '--token-file', join(dir, 'token-a'), '--namespace', 'b']);
  t.is(outside.code, 2);
  t.regex(outside.stderr, /the collector refused this reader \(403: forbidden: out-of-scope: this reader may not read namespace b/);
  const tail = await runCli(['tail', '--collector', m.c.httpUrl]);
  t.is(tail.code, 2);
  t.regex(tail.stderr, /auditmesh tail: the collector wants a reader credential \(401/);
});
