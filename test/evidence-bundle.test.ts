import test, { type ExecutionContext } from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { verifyBundle, type EvidenceBundle } from '../ledger/evidence-bundle.js';
import { startCli, runInProcess, runCli } from './helpers/child.js';
import { startSidecarProcess } from './helpers/sidecar-process.js';
import { request, startUpstream } from './helpers/net.js';
import { eventually } from './helpers/shipping.js';
import { tempDir } from './helpers/sidecar.js';
import { startTestCollector } from './helpers/collector.js';

// Proofs on request and portable bundles (issue 27, parts 2 and 3), with a collector and a sidecar
// each in a process of its own, as they run; every tamper a bundle can suffer is named by verify.

interface Mesh {
  dir: string;
  storeDir: string;
  http: string;
  sidecarId: string;
  stopCollector(): Promise<void>;
}

/** `auditmesh collector --insecure` and `auditmesh sidecar` shipping to it, each a process, with `n` records stored. */
async function startMesh(t: ExecutionContext, n: number): Promise<Mesh> {
  const dir = await tempDir(t);
  const storeDir = join(dir, 'store');
  const collector = startCli(t, ['collector', '--store', storeDir, '--grpc-port', '0', '--http-port', '0', '--insecure', '--checkpoint-interval-ms', '300']);
  const [, grpc, http] = await collector.waitFor(/"grpc":"(127\.0\.0\.1:\d+)","http":"(http:\/\/127\.0\.0\.1:\d+)"/, 90_000);
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecarId = 'shop/ledger-0';
  const sidecar = await startSidecarProcess(t, { appPort: app.port, args: ['--service', 'ledger', '--collector', grpc, '--sidecar-id', sidecarId, '--checkpoint-interval-ms', '200', '--batch-max-records', '4'] });
  // Four at a time, so batches hold several records (inclusion paths of some length).
  for (let i = 0; i < n; i += 4) {
    const statuses = await Promise.all(Array.from({ length: Math.min(4, n - i) }, async (_, j) => (await request(sidecar.ports.inbound, { path: `/items/${i + j}`, headers: { 'x-request-id': `req-${i + j}` } })).status));
    t.true(statuses.every((s) => s === 200));
  }
  await eventually(`${n} records stored`, async () => (await (await fetch(`${http}/v1/records?limit=1000`)).text()).split('\n').filter(Boolean).length === n, 60_000);
  return {
    dir,
    storeDir,
    http,
    sidecarId,
    async stopCollector() {
      await sidecar.stop();
      collector.child.kill('SIGTERM');
      await collector.done;
    },
  };
}

test('GET /v1/proof proves a record up to the collector signed tree head; export writes a bundle that verify checks offline, and names every tamper', async (t) => {
  const mesh = await startMesh(t, 12);
  const proofRes = await fetch(`${mesh.http}/v1/proof?record=${encodeURIComponent(`${mesh.sidecarId}:5`)}`);
  t.is(proofRes.status, 200);
  const proof = (await proofRes.json()) as EvidenceBundle;
  t.is(proof.records.length, 1);
  t.like(proof.records[0], { sidecar: mesh.sidecarId, seq: 5 });
  t.true(verifyBundle(proof).ok, JSON.stringify(verifyBundle(proof).failure));
  t.is((await fetch(`${mesh.http}/v1/proof?record=${encodeURIComponent(`${mesh.sidecarId}:999`)}`)).status, 404);
  t.is((await fetch(`${mesh.http}/v1/proof?record=nope`)).status, 400);

  const file = join(mesh.dir, 'bundle.json');
  const exported = await runCli(['export', '--collector', mesh.http, '--service', 'ledger', '--out', file]);
  t.is(exported.code, 0, exported.stderr);
  t.regex(exported.stderr, /wrote .*: 12 records of 1 sidecars/);
  const verified = await runCli(['verify', file]);
  t.is(verified.code, 0, verified.stdout + verified.stderr);
  t.regex(verified.stdout, /bundle verified: 12 records of 1 sidecars/);
  t.regex(verified.stdout, /note: collector key [0-9a-f]{16} has no certification/, 'an --insecure collector: reported, not failed');

  const bundle = JSON.parse(await readFile(file, 'utf8')) as EvidenceBundle;
  const tampered = async (what: string, edit: (b: EvidenceBundle) => void, expected: RegExp): Promise<void> => {
    const copy = structuredClone(bundle);
    edit(copy);
    const path = join(mesh.dir, `tampered-${what}.json`);
    await writeFile(path, JSON.stringify(copy));
    const r = await runInProcess(['verify', path]);
    t.is(r.code, 1, `${what}: ${r.stdout}`);
    t.regex(r.stdout, expected, what);
  };
  const flip = (hex: string): string => (hex[0] === '0' ? '1' : '0') + hex.slice(1);
  const at = bundle.records.findIndex((r) => r.path.length > 0);
  t.true(at >= 0, 'a record in a batch of several');
  const r0 = bundle.records[at];
  await tampered('record', (b) => (b.records[at].bytes = Buffer.from(Buffer.from(r0.bytes, 'base64').toString('utf8').replace('/items/', '/itemz/')).toString('base64')), new RegExp(`FAILED at record ${mesh.sidecarId}:${r0.seq}: the record and its inclusion path`));
  await tampered('record path', (b) => (b.records[at].path[0] = flip(b.records[at].path[0])), new RegExp(`FAILED at record ${mesh.sidecarId}:${r0.seq}: `));
  await tampered('witness path', (b) => (b.sidecars[0].witness[0].path[0] = flip(b.sidecars[0].witness[0].path[0])), /FAILED at sidecar .* batch \d+ in the collector's log: its entry/);
  await tampered('tree head', (b) => (b.tree_heads.at(-1)!.root = flip(b.tree_heads.at(-1)!.root)), /FAILED at tree head of size \d+: its signature does not verify/);
  await tampered('tree head time', (b) => (b.tree_heads.at(-1)!.unix_ms += 1), /FAILED at tree head of size \d+: its signature does not verify/);
  await tampered('collector key', (b) => (b.collector_keys[0].public_key = Buffer.from(b.collector_keys[0].public_key, 'base64').fill(7, 36).toString('base64')), /FAILED at collector key [0-9a-f]{16}: its public key/);
  await tampered('sidecar key', (b) => (b.sidecars[0].keys[0].public_key = Buffer.from(b.sidecars[0].keys[0].public_key, 'base64').fill(7, 36).toString('base64')), /FAILED at sidecar shop\/ledger-0 key [0-9a-f]{16}: its public key/);
  await tampered('link', (b) => (b.sidecars[0].links[0].sealed_unix_ms += 1), /FAILED at sidecar shop\/ledger-0 batch \d+: its head recomputed/);
  await tampered('signature', (b) => {
    const l = b.sidecars[0].links.find((x) => x.sig !== undefined)!;
    l.sig = flip(l.sig!);
  }, /FAILED at sidecar shop\/ledger-0 batch \d+: the signature over its head does not verify/);

  // From the store itself (read only, while the collector runs), and a record proved in it.
  const fromStore = join(mesh.dir, 'from-store.json');
  const e2 = await runInProcess(['export', mesh.storeDir, '--limit', '3', '--out', fromStore]);
  t.is(e2.code, 0, e2.stderr);
  t.true(verifyBundle(JSON.parse(await readFile(fromStore, 'utf8')) as EvidenceBundle).ok);
  await mesh.stopCollector();
  const v = await runInProcess(['verify', mesh.storeDir, '--record', `${mesh.sidecarId}:5`]);
  t.is(v.code, 0, v.stdout + v.stderr);
  t.regex(v.stdout, /record shop\/ledger-0:5: leaf \d+ of \d+ in batch \d+/);
  t.regex(v.stdout, /record shop\/ledger-0:5 is proved, up to the collector's signed tree head/);
  t.regex(v.stdout, /witness log verified: \d+ entries, \d+ signed tree heads, newest tree head of size \d+ .*; every stored link is in it/);
  t.regex(v.stdout, /collector store verified/);
  // A stored link altered on disk no longer matches the entry the witness log holds for it.
  const { open } = await import('lmdb');
  const env = open({ path: mesh.storeDir, maxDbs: 64 });
  const links = env.openDB<Record<string, unknown>, [string, number]>('links', { encoding: 'msgpack' });
  const first = Array.from(links.getRange({ limit: 1 }))[0];
  await links.put(first.key, { ...first.value, head: 'ab'.repeat(32) });
  await env.close();
  const altered = await runInProcess(['verify', mesh.storeDir]);
  t.is(altered.code, 1);
  t.regex(altered.stdout, /witness log FAILED: sidecar shop\/ledger-0 batch \d+ is not the link the witness log holds for it/);
  const bad = await runInProcess(['verify', mesh.storeDir, '--record', '5']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /SIDECAR_ID:SEQ/);
});

test('/v1/proof needs the same credential and namespace scope as /v1/records', async (t) => {
  const dir = await tempDir(t);
  const readers = join(dir, 'readers');
  await writeFile(readers, 'every-ns-reader *\nbilling-reader billing\n');
  const collector = await startTestCollector(t, { readerTokenFile: readers });
  // A record of namespace shop, shipped by a sidecar in this process over real gRPC.
  const { startShippingSidecar } = await import('./helpers/shipping.js');
  await writeFile(join(dir, 'token'), `${collector.token}\n`);
  const s = await startShippingSidecar(t, collector.grpcAddress, { sidecarId: 'shop/ledger-0', collectorTokenFile: join(dir, 'token') });
  t.is(await s.send('a'), 200);
  const url = `${collector.httpUrl}/v1/proof?record=${encodeURIComponent('shop/ledger-0:1')}`;
  await eventually('the record stored', async () => (await fetch(url, { headers: { authorization: 'Bearer every-ns-reader' } })).status === 200);
  t.is((await fetch(url)).status, 401);
  t.is((await fetch(url, { headers: { authorization: 'Bearer billing-reader' } })).status, 403);
  const ok = (await (await fetch(url, { headers: { authorization: 'Bearer every-ns-reader' } })).json()) as EvidenceBundle;
  t.true(verifyBundle(ok).ok);
});

test('a bundle of one record of a larger store stays small: proofs, not the store', async (t) => {
  const mesh = await startMesh(t, 60);
  const one = join(mesh.dir, 'one.json');
  const all = join(mesh.dir, 'all.json');
  t.is((await runInProcess(['export', '--collector', mesh.http, '--correlation-id', 'req-7', '--out', one])).code, 0);
  t.is((await runInProcess(['export', '--collector', mesh.http, '--limit', '60', '--out', all])).code, 0);
  const oneBytes = (await readFile(one)).length;
  const allBytes = (await readFile(all)).length;
  t.true(verifyBundle(JSON.parse(await readFile(one, 'utf8')) as EvidenceBundle).ok);
  t.true(oneBytes < 12_000, `one record: ${oneBytes} bytes`);
  t.true(allBytes > 10 * oneBytes, `60 records: ${allBytes} bytes, one: ${oneBytes}`);
});

test('with the mesh CA, a bundle carries the certifications of the collector key and the sidecar key; verify --ca-file checks them and names an altered one', async (t) => {
  const { createTokenIssuer, startIdentityCollector } = await import('./helpers/identity.js');
  const { startShippingSidecar } = await import('./helpers/shipping.js');
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer, { checkpointIntervalMs: 300 });
  const dir = await tempDir(t);
  const identityTokenFile = join(dir, 'identity-token');
  await writeFile(identityTokenFile, await issuer.sign({ namespace: 'shop', pod: { name: 'ledger-0', uid: 'u-1' }, serviceAccount: { name: 'ledger', uid: 's-1' } }, { audience: 'auditmesh', expirationSeconds: 3600 }));
  const caFile = join(dir, 'ca.crt');
  await writeFile(caFile, collector.ca!.certPem);
  const s = await startShippingSidecar(t, collector.grpcAddress, { collectorTokenFile: undefined, identityTokenFile, caFile, sidecarId: 'shop/ledger-0' }, dir);
  for (const id of ['a', 'b', 'c']) t.is(await s.send(id), 200);
  await eventually('3 records stored', async () => (await (await collector.get('/v1/records', collector.readAuth)).text()).split('\n').filter(Boolean).length === 3);
  const file = join(dir, 'bundle.json');
  const e = await runInProcess(['export', '--collector', collector.httpUrl, ...collector.readerArgs, '--out', file]);
  t.is(e.code, 0, e.stderr);
  const v = await runInProcess(['verify', file, '--ca-file', caFile]);
  t.is(v.code, 0, v.stdout + v.stderr);
  t.notRegex(v.stdout, /no certification/, 'both keys certified');
  const bundle = JSON.parse(await readFile(file, 'utf8')) as EvidenceBundle;
  t.truthy(bundle.collector_keys[0].chain_pem);
  t.truthy(bundle.sidecars[0].keys[0].certificate);
  const check = async (what: string, edit: (b: EvidenceBundle) => void, expected: RegExp, code = 1): Promise<void> => {
    const copy = structuredClone(bundle);
    edit(copy);
    const path = join(dir, `${what}.json`);
    await writeFile(path, JSON.stringify(copy));
    const r = await runInProcess(['verify', path, '--ca-file', caFile]);
    t.is(r.code, code, `${what}: ${r.stdout}`);
    t.regex(r.stdout, expected, what);
  };
  // The collector's certificate offered for the sidecar's key, and the other way round.
  const collectorLeaf = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(bundle.collector_keys[0].chain_pem!)![0];
  await check('sidecar certification', (b) => (b.sidecars[0].keys[0].certificate = collectorLeaf), /FAILED at sidecar shop\/ledger-0@u-1 key [0-9a-f]{16}: its certificate is for another public key/);
  await check('collector certification', (b) => (b.collector_keys[0].chain_pem = collector.ca!.certPem), /FAILED at collector key [0-9a-f]{16}: its certificate is not issued by the mesh CA|for another public key/);
  await check('certification removed', (b) => delete b.sidecars[0].keys[0].certificate, /note: sidecar shop\/ledger-0@u-1 key [0-9a-f]{16} has no certification by the mesh CA[\s\S]*bundle verified/, 0);
});
