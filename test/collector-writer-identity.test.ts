import test, { type ExecutionContext } from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { runCli } from './helpers/child.js';
import { journalShipment, openSync, type TestCollector } from './helpers/collector.js';
import { createTokenIssuer, sidecarToken, startIdentityCollector } from './helpers/identity.js';
import { makeRecord, writeJournal } from './helpers/journal.js';
import { eventually, startShippingSidecar, type ShippingSidecar } from './helpers/shipping.js';
import { tempDir } from './helpers/sidecar.js';
import { followTail } from './helpers/tail.js';
import type { TokenIssuer, TokenSubject } from './cluster/token-issuer.js';

// Issue 24: the collector stamps each stored record with the identity its writer proved (the
// client certificate of an mTLS stream, from the mesh CA, on a real projected ServiceAccount
// token), indexes it, and shows where a record's claimed service disagrees with it. A sidecar of
// namespace shop running as service account orders says `--service payments`: a lie its records
// carry, and the stamp exposes.

const LIAR = 'spiffe://cluster.local/ns/shop/sa/orders';
const HONEST = 'spiffe://cluster.local/ns/payments/sa/payments';
const READERS = 'r-all *\nr-payments payments\nr-shop shop\n';

const pod = (namespace: string, name: string, sa: string): TokenSubject => ({ namespace, pod: { name, uid: `uid-${name}` }, serviceAccount: { name: sa, uid: `sa-${sa}` } });

/** A sidecar of `subject` with its own projected token and the mesh CA bundle: certified, shipping over mTLS. */
async function meshSidecar(t: ExecutionContext, c: TestCollector, issuer: TokenIssuer, subject: TokenSubject, service: string): Promise<ShippingSidecar> {
  const dir = await tempDir(t);
  const identityTokenFile = join(dir, 'identity-token');
  await writeFile(identityTokenFile, await sidecarToken(issuer, subject));
  const caFile = join(dir, 'ca.crt');
  await writeFile(caFile, c.ca!.certPem);
  return startShippingSidecar(t, c.grpcAddress, { collectorTokenFile: undefined, identityTokenFile, caFile, sidecarId: `${subject.namespace}/${subject.pod.name}`, service }, dir);
}

async function read(c: TestCollector, path: string, token: string): Promise<{ status: number; records: Record<string, unknown>[]; body: string }> {
  const res = await c.get(path, { headers: { authorization: `Bearer ${token}` } });
  const body = await res.text();
  return { status: res.status, body, records: res.status === 200 ? body.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>) : [] };
}

const ids = (records: Record<string, unknown>[]): string[] => records.map((r) => String(r['audit.request_id'])).sort();

test('a sidecar whose --service is a lie is stored with the identity of its service account and identity_mismatch; query by identity returns exactly its records; a payments reader never sees it', async (t) => {
  const issuer = await createTokenIssuer();
  const dir = await tempDir(t);
  await writeFile(join(dir, 'readers'), READERS);
  const c = await startIdentityCollector(t, issuer, { readerTokenFile: join(dir, 'readers') });
  const tailAll = await followTail(t, c.httpUrl, 'r-all', c.ca?.certPem);
  const tailPayments = await followTail(t, c.httpUrl, 'r-payments', c.ca?.certPem);
  const liar = await meshSidecar(t, c, issuer, pod('shop', 'orders-0', 'orders'), 'payments');
  const honest = await meshSidecar(t, c, issuer, pod('payments', 'payments-0', 'payments'), 'payments');
  for (const id of ['l1', 'l2', 'l3']) t.is(await liar.send(id), 200);
  for (const id of ['h1', 'h2']) t.is(await honest.send(id), 200);
  await eventually('5 records stored', async () => (await read(c, '/v1/records?service=payments&limit=1000', 'r-all')).records.length === 5);

  const all = (await read(c, '/v1/records?service=payments&limit=1000', 'r-all')).records;
  const lies = all.filter((r) => r['audit.sidecar_id'] === 'shop/orders-0');
  t.is(lies.length, 3);
  for (const r of lies) t.like(r, { 'audit.service': 'payments', 'audit.identity': LIAR, 'audit.identity_mismatch': true, 'audit.incarnation': 'uid-orders-0' });
  const truths = all.filter((r) => r['audit.sidecar_id'] === 'payments/payments-0');
  t.is(truths.length, 2);
  for (const r of truths) {
    t.is(r['audit.identity'], HONEST);
    t.false('audit.identity_mismatch' in r, 'a service named as its service account is no mismatch');
  }

  // Served from the identity index, and exactly the writer's records.
  t.deepEqual(ids((await read(c, `/v1/records?identity=${encodeURIComponent(LIAR)}&limit=1000`, 'r-all')).records), ['l1', 'l2', 'l3']);
  t.deepEqual(ids((await read(c, `/v1/records?identity=${encodeURIComponent(HONEST)}&service=payments&status=ok`, 'r-all')).records), ['h1', 'h2']);
  t.deepEqual((await read(c, `/v1/records?identity=${encodeURIComponent('spiffe://cluster.local/ns/shop/sa/nobody')}`, 'r-all')).records, []);
  const bad = await read(c, '/v1/records?identity=orders', 'r-all');
  t.is(bad.status, 400);
  t.regex(bad.body, /^bad query: identity: expected a workload SPIFFE ID/);

  const cliJson = await runCli(['query', '--collector', c.httpUrl, ...trust(c), '--token-file', await tokenFile(t, 'r-all'), '--identity', LIAR, '-o', 'json']);
  t.is(cliJson.code, 0, cliJson.stderr);
  t.deepEqual(ids(cliJson.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)), ['l1', 'l2', 'l3']);
  const cliTable = await runCli(['query', '--collector', c.httpUrl, ...trust(c), '--token-file', await tokenFile(t, 'r-all'), '--identity', LIAR]);
  t.regex(cliTable.stdout, /IDENTITY MISMATCH: written by spiffe:\/\/cluster\.local\/ns\/shop\/sa\/orders/);
  t.is((await runCli(['query', '--collector', c.httpUrl, ...trust(c), '--token-file', await tokenFile(t, 'r-all'), '--identity', 'orders'])).code, 2);

  // The namespace is the proven writer's: a payments reader sees payments' own records, not the liar's.
  t.deepEqual(ids((await read(c, '/v1/records?service=payments&limit=1000', 'r-payments')).records), ['h1', 'h2']);
  t.deepEqual(ids((await read(c, '/v1/records?service=payments&limit=1000', 'r-shop')).records), ['l1', 'l2', 'l3']);
  const outside = await read(c, `/v1/records?identity=${encodeURIComponent(LIAR)}`, 'r-payments');
  t.is(outside.status, 403);
  t.regex(outside.body, /^forbidden: out-of-scope: .*namespace shop/);

  // The live tail carries the same stamps, and scopes by them.
  await eventually('the * tail saw all 5', () => tailAll.length === 5);
  await eventually('the payments tail saw its 2', () => tailPayments.length === 2);
  t.deepEqual(ids(tailPayments), ['h1', 'h2']);
  t.deepEqual(ids(tailAll.filter((r) => r['audit.identity'] === LIAR && r['audit.identity_mismatch'] === true)), ['l1', 'l2', 'l3']);
});

test("a shared-token writer proves no identity: a record's own audit.identity is not believed, kept as a claim, and scopes nothing", async (t) => {
  const issuer = await createTokenIssuer();
  const dir = await tempDir(t);
  await writeFile(join(dir, 'readers'), READERS);
  const c = await startIdentityCollector(t, issuer, { readerTokenFile: join(dir, 'readers'), identity: undefined });
  const journalDir = join(dir, 'journal');
  const key = ephemeralSigningKey();
  await writeJournal({ journalDir, signingKey: key }, 1, 4, (i) => makeRecord(i, { 'audit.service': 'payments', 'audit.request_id': `forged-${i}`, 'audit.identity': HONEST } as Parameters<typeof makeRecord>[1]));
  const s = await journalShipment(journalDir, key, 'forger', 'payments');
  const peer = openSync(t, c.grpcAddress, 'shared-local-token');
  peer.send({ hello: s.hello });
  await peer.next();
  for (const segment of s.segments) peer.send({ segment });
  for (const _ of s.segments) t.like(await peer.next(), { body: 'ack' });

  const all = (await read(c, '/v1/records?limit=1000', 'r-all')).records;
  t.is(all.length, 4);
  for (const r of all) {
    t.false('audit.identity' in r, 'no stamp: the shared token proves no workload');
    t.is(r['audit.claimed.identity'], HONEST);
    t.false('audit.identity_mismatch' in r);
    t.false('audit.incarnation' in r);
  }
  t.deepEqual((await read(c, '/v1/records?limit=1000', 'r-payments')).records, [], 'a claimed identity gives no namespace');
  t.deepEqual((await read(c, `/v1/records?identity=${encodeURIComponent(HONEST)}`, 'r-all')).records, [], 'nor does it answer an identity query');
});

/** `--ca-file` of the mesh CA for a collector that serves its API over HTTPS. */
const trust = (c: TestCollector): string[] => (c.caFile === null ? [] : ['--ca-file', c.caFile]);

/** A reader token file for `auditmesh query --token-file`. */
async function tokenFile(t: ExecutionContext, token: string): Promise<string> {
  const file = join(await tempDir(t), 'reader-token');
  await writeFile(file, `${token}\n`);
  return file;
}
