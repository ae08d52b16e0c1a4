import test from 'ava';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createWebhookCertificates, type WebhookCertificates } from '../control/install/webhook-certificates.js';
import { createAdmissionServer } from '../control/injector/admission-server.js';
import { applyPatch } from '../control/injector/json-patch.js';
import type { Pod } from '../control/injector/pod.js';
import { runCli, startCli } from './helpers/child.js';
import { listen } from './helpers/net.js';
import { metricValue, scrape, tempDir } from './helpers/sidecar.js';
import { schemaErrors } from './helpers/kube-schema.js';
import { assertCarriesMeshCa, writeMeshCa } from './helpers/ca-bundle.js';

const SERVICE_NAME = 'auditmesh-injector.auditmesh-system.svc';
const certs = createWebhookCertificates([SERVICE_NAME], 30);

function fixture(name: string): { request: { uid: string; object: Pod } } {
  return JSON.parse(readFileSync(new URL(`./fixtures/admission/${name}.json`, import.meta.url), 'utf8'));
}

async function writePair(dir: string, pair: WebhookCertificates): Promise<{ cert: string; key: string }> {
  const files = { cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') };
  await writeFile(files.cert, pair.cert);
  await writeFile(files.key, pair.key);
  return files;
}

interface Answer {
  status: number;
  body: string;
}

/** POSTs over real HTTPS, checking the server's certificate against `ca` for the Service's name, as the API server does. */
function post(port: number, ca: string, path: string, body: string | Buffer, method = 'POST'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path, method, ca, servername: SERVICE_NAME, headers: { 'content-type': 'application/json' }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function startInjector(t: import('ava').ExecutionContext, extra: string[] = []): Promise<{ port: number; admin: number; ca: string }> {
  const pair = await certs;
  const files = await writePair(await tempDir(t), pair);
  const injector = startCli(t, ['injector', '--port', '0', '--admin-port', '0', '--bind', '127.0.0.1', '--tls-cert', files.cert, '--tls-key', files.key, '--max-body-bytes', '65536', ...extra]);
  const m = await injector.waitFor(/"msg":"injector listening","port":(\d+),"admin":(\d+)/, 45_000);
  return { port: Number(m[1]), admin: Number(m[2]), ca: pair.caCert };
}

test('auditmesh injector answers a Deployment pod’s AdmissionReview over HTTPS with a base64 JSONPatch that yields a valid injected pod', async (t) => {
  const { port, admin, ca } = await startInjector(t);
  // Before any review, every result and reason reads 0: an alert or panel over them has a series to see.
  const before = await scrape(admin);
  const atZero = [...before.matchAll(/^auditmesh_injector_admissions_total\{result="([^"]+)",reason="([^"]+)"\} 0$/gm)].map((m) => `${m[1]}/${m[2]}`);
  t.deepEqual(atZero.sort(), ['error/internal', 'ignored/no-pod-spec', 'ignored/not-pod-create', 'injected/injected', 'skipped/already-injected', 'skipped/host-network', 'skipped/invalid-annotations', 'skipped/mirror-pod', 'skipped/not-enabled', 'skipped/opted-out']);
  t.regex(before, /^auditmesh_injector_cert_reloads_total\{result="failed"\} 0$/m);
  const review = fixture('deployment-pod');
  const answer = await post(port, ca, '/inject/namespace-enabled', JSON.stringify(review));
  t.is(answer.status, 200);
  const { apiVersion, kind, response } = JSON.parse(answer.body);
  t.is(apiVersion, 'admission.k8s.io/v1');
  t.is(kind, 'AdmissionReview');
  t.is(response.uid, review.request.uid);
  t.true(response.allowed);
  t.is(response.patchType, 'JSONPatch');
  const patched = applyPatch(review.request.object, JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8')));
  t.is(schemaErrors(patched), null);
  t.deepEqual(patched.spec.initContainers!.map((c) => c.name), ['auditmesh-init', 'auditmesh-proxy']);
  // The same pod through the pod-label path, in a namespace that is not enabled: no patch.
  const skipped = JSON.parse((await post(port, ca, '/inject', JSON.stringify(review))).body).response;
  t.true(skipped.allowed);
  t.is(skipped.patch, undefined);
  const metrics = await scrape(admin);
  t.is(metricValue(metrics, 'auditmesh_injector_admissions_total', { result: 'injected', reason: 'injected' }), 1);
  t.is(metricValue(metrics, 'auditmesh_injector_admissions_total', { result: 'skipped', reason: 'not-enabled' }), 1);
});

test('the webhook refuses bad JSON, a wrong kind, an oversized body, a GET and an unknown path, and lets non-pod objects through', async (t) => {
  const { port, ca } = await startInjector(t);
  const badJson = await post(port, ca, '/inject', '{"apiVersion": "admission.k8s.io/v1", ');
  t.is(badJson.status, 400);
  t.regex(badJson.body, /not JSON/);
  const v1beta1 = { ...fixture('deployment-pod'), apiVersion: 'admission.k8s.io/v1beta1' };
  t.is((await post(port, ca, '/inject', JSON.stringify(v1beta1))).status, 400);
  t.regex((await post(port, ca, '/inject', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'Pod' }))).body, /expected an AdmissionReview/);
  const huge = fixture('deployment-pod');
  (huge.request.object.metadata!.annotations ??= {}).padding = 'x'.repeat(100_000);
  const tooLarge = await post(port, ca, '/inject', JSON.stringify(huge));
  t.is(tooLarge.status, 413);
  t.is((await post(port, ca, '/inject', '', 'GET')).status, 405);
  t.is((await post(port, ca, '/mutate', '{}')).status, 404);

  const deployment = fixture('deployment-pod');
  Object.assign(deployment.request, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' }, object: { apiVersion: 'apps/v1', kind: 'Deployment' } });
  const let_through = JSON.parse((await post(port, ca, '/inject/namespace-enabled', JSON.stringify(deployment))).body).response;
  t.true(let_through.allowed);
  t.is(let_through.patch, undefined);
});

test('an internal error admits the pod unchanged with a warning, and is counted', async (t) => {
  const { port, admin, ca } = await startInjector(t);
  const review = fixture('deployment-pod');
  // A container that is null makes the policy throw: the pod must still be admitted.
  (review.request.object.spec.containers as unknown[]).push(null);
  const answer = JSON.parse((await post(port, ca, '/inject/namespace-enabled', JSON.stringify(review))).body).response;
  t.true(answer.allowed);
  t.is(answer.patch, undefined);
  t.regex(answer.warnings[0], /admitted unchanged/);
  t.is(metricValue(await scrape(admin), 'auditmesh_injector_admissions_total', { result: 'error' }), 1);
});

test('a renewed certificate pair is served without a restart; a broken pair is refused and the old one kept', async (t) => {
  const dir = await tempDir(t);
  const first = await certs;
  const files = await writePair(dir, first);
  const reloads: string[] = [];
  const server = await createAdmissionServer({
    certFile: files.cert,
    keyFile: files.key,
    certReloadMs: 60_000,
    maxBodyBytes: 65536,
    requestTimeoutMs: 5000,
    handlers: new Map([['/ok', () => ({ allowed: true })]]),
    onInternalError: () => {},
    onCertReload: (result) => reloads.push(result),
  });
  t.teardown(() => server.close());
  const port = await listen(server.server);
  const review = JSON.stringify(fixture('deployment-pod'));
  t.is((await post(port, first.caCert, '/ok', review)).status, 200);

  // A key that does not match the certificate (a Secret caught mid-update) is not taken.
  const second = await createWebhookCertificates([SERVICE_NAME], 30);
  await writeFile(files.cert, second.cert);
  t.false(await server.reloadCertificates());
  t.is((await post(port, first.caCert, '/ok', review)).status, 200);

  await writeFile(files.key, second.key);
  t.true(await server.reloadCertificates());
  t.is((await post(port, second.caCert, '/ok', review)).status, 200);
  await t.throwsAsync(post(port, first.caCert, '/ok', review), { message: /certificate/ });
  t.deepEqual(reloads, ['failed', 'reloaded']);
});

test('with --ca-file the webhook embeds the mesh CA in each pod it injects (annotation, downwardAPI volume, read-only mount, AUDITMESH_CA_FILE), replacing a bundle the pod came with, and never the key', async (t) => {
  const meshCa = await writeMeshCa(t);
  const { port, ca } = await startInjector(t, ['--ca-file', meshCa.certFile]);
  const review = fixture('deployment-pod');
  // A bundle of the pod author's choosing would let its sidecar trust another collector.
  (review.request.object.metadata!.annotations ??= {})['auditmesh.io/ca-bundle'] = (await writeMeshCa(t)).certPem;
  const answer = await post(port, ca, '/inject/namespace-enabled', JSON.stringify(review));
  t.is(answer.status, 200);
  const { response } = JSON.parse(answer.body);
  t.true(response.allowed);
  const patched = applyPatch(review.request.object, JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8')));
  assertCarriesMeshCa(t, patched, meshCa);
});

test('the injector refuses to start with a --ca-file that holds a private key, no certificate, or nothing at all, naming it', async (t) => {
  const meshCa = await writeMeshCa(t);
  const dir = await tempDir(t);
  const combined = join(dir, 'combined.pem');
  await writeFile(combined, meshCa.certPem + meshCa.keyPem);
  const junk = join(dir, 'junk.pem');
  await writeFile(junk, 'not a certificate\n');
  const { cert, key } = await writePair(dir, await certs);
  for (const [file, message] of [[meshCa.keyFile, /holds a private key/], [combined, /holds a private key/], [junk, /holds no PEM certificate/], [join(dir, 'missing.crt'), /cannot read the mesh CA bundle/]] as const) {
    const r = await runCli(['injector', '--port', '0', '--admin-port', '0', '--bind', '127.0.0.1', '--tls-cert', cert, '--tls-key', key, '--ca-file', file]);
    t.is(r.code, 1, file);
    t.regex(r.stderr, message);
    t.true(r.stderr.includes(file));
  }
});
