import test, { type ExecutionContext } from 'ava';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from './helpers/child.js';
import { createTokenIssuer, startIdentityCollector, startTokenCollector } from './helpers/identity.js';
import { eventually, startShippingSidecar, type ShippingSidecar } from './helpers/shipping.js';
import { tempDir } from './helpers/sidecar.js';
import type { TestCollector } from './helpers/collector.js';
import type { TokenIssuer, TokenSubject } from './cluster/token-issuer.js';

// A key change inside one chain that the previous key did not endorse (the key file lost, no
// KEY.previous), shipped over real mTLS: the collector takes it only when the stream's client
// certificate, from the mesh CA, certifies the new key for the identity the chain's key had.

const ID = 'shop/ledger-0';
const LEDGER: TokenSubject = { namespace: 'shop', pod: { name: 'ledger-0', uid: 'u-1' }, serviceAccount: { name: 'ledger', uid: 's-1' } };
const INTRUDER: TokenSubject = { ...LEDGER, serviceAccount: { name: 'intruder', uid: 's-2' } };
const LEDGER_SPIFFE = 'spiffe://cluster.local/ns/shop/sa/ledger';
/** The chain verify names: the sidecar id and its incarnation (the token's pod uid). */
const CHAIN = `${ID}@${LEDGER.pod.uid}`;

/** A sidecar of `dir` shipping over mTLS with a token naming `subject`. */
async function mtlsSidecar(t: ExecutionContext, collector: TestCollector, issuer: TokenIssuer, dir: string, subject: TokenSubject): Promise<ShippingSidecar> {
  const identityTokenFile = join(dir, 'identity-token');
  await writeFile(identityTokenFile, await issuer.sign(subject, { audience: 'auditmesh', expirationSeconds: 3600 }));
  const caFile = join(dir, 'ca.crt');
  await writeFile(caFile, collector.ca!.certPem);
  return startShippingSidecar(t, collector.grpcAddress, { collectorTokenFile: undefined, identityTokenFile, caFile, sidecarId: ID }, dir);
}

async function stored(collector: TestCollector): Promise<number> {
  const res = await collector.get('/v1/records?service=ledger&limit=1000', collector.readAuth);
  if (!res.ok) throw new Error(`/v1/records: ${res.status} ${await res.text()}`);
  return (await res.text()).split('\n').filter((l) => l !== '').length;
}

/** Ships `n` requests through `s` and waits until the collector holds `total` records. */
async function shipRound(s: ShippingSidecar, collector: TestCollector, tag: string, n: number, total: number): Promise<void> {
  for (let i = 0; i < n; i++) if ((await s.send(`${tag}${i}`)) !== 200) throw new Error(`request ${tag}${i} not answered 200`);
  await eventually(`${total} records stored`, async () => (await stored(collector)) === total);
  await s.sidecar.close();
}

const refusalOf = (collector: TestCollector) => collector.sidecars().find((x) => x.id === ID)?.last_refusal ?? null;

test('over mTLS, a key change certified by the mesh CA for the chain\'s identity is taken; journal and store verify with --ca-file and report it, and fail without', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const dir = await tempDir(t);
  await shipRound(await mtlsSidecar(t, collector, issuer, dir, LEDGER), collector, 'a', 3, 3);
  const first = collector.sidecars().find((x) => x.id === ID)!;
  await rm(join(dir, 'sidecar.key'));
  const s = await mtlsSidecar(t, collector, issuer, dir, LEDGER);
  t.true(s.logged.some((l) => l.includes('journal key changed without the previous key to endorse it')), 'the sidecar warns at start');
  await shipRound(s, collector, 'b', 3, 6);
  const now = collector.sidecars().find((x) => x.id === ID)!;
  t.is(now.last_refusal, null);
  t.not(now.key_id, first.key_id, 'the pin moved to the certified key');
  t.true(now.verified);
  const change = new RegExp(`: ${first.key_id} -> ${now.key_id}, endorsed by the mesh CA, as ${LEDGER_SPIFFE}\\n`);

  const caFile = join(dir, 'ca.crt');
  const journal = join(dir, 'journal');
  const bare = await runCli(['verify', journal]);
  t.is(bare.code, 1, 'without the CA bundle nothing endorses the change');
  t.regex(bare.stdout, new RegExp(`changes the key from ${first.key_id} to ${now.key_id} without endorsement.*--ca-file`));
  const withCa = await runCli(['verify', journal, '--ca-file', caFile]);
  t.is(withCa.code, 0, withCa.stdout + withCa.stderr);
  t.regex(withCa.stdout, change);

  await collector.close();
  const storeBare = await runCli(['verify', collector.storeDir]);
  t.is(storeBare.code, 1);
  t.regex(storeBare.stdout, new RegExp(`verification FAILED: sidecar ${CHAIN}, batch \\d+: epoch link \\d+ \\(epoch 2\\) changes the key from ${first.key_id} to ${now.key_id} without endorsement`));
  const store = await runCli(['verify', collector.storeDir, '--ca-file', caFile]);
  t.is(store.code, 0, store.stdout + store.stderr);
  t.regex(store.stdout, new RegExp(`^ok +${CHAIN} +key ${now.key_id} +6 records`, 'm'));
  t.regex(store.stdout, change);
});

test('over mTLS, a new key certified for another identity of the same pod is refused key-mismatch naming both identities; the pin stays', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const dir = await tempDir(t);
  await shipRound(await mtlsSidecar(t, collector, issuer, dir, LEDGER), collector, 'a', 2, 2);
  const first = collector.sidecars().find((x) => x.id === ID)!;
  await rm(join(dir, 'sidecar.key'));
  const s = await mtlsSidecar(t, collector, issuer, dir, INTRUDER);
  for (const id of ['x', 'y']) t.is(await s.send(id), 200, 'the sidecar still serves');
  await eventually('the stream refused', () => refusalOf(collector) !== null);
  const refusal = refusalOf(collector)!;
  t.is(refusal.code, 'key-mismatch');
  t.regex(refusal.reason, new RegExp(`is certified as spiffe://cluster.local/ns/shop/sa/intruder, but the previous key ${first.key_id} as ${LEDGER_SPIFFE}`));
  t.is(collector.sidecars().find((x) => x.id === ID)!.key_id, first.key_id);
  t.is(await stored(collector), 2, 'nothing of the new key stored');
  const metrics = await (await collector.get('/metrics')).text();
  t.regex(metrics, /auditmesh_collector_verification_failures_total\{reason="key-mismatch"\} [1-9]/);
});

// The chain is shipped with the pod's own token over plaintext gRPC: the same incarnation (pod uid) as
// the mTLS stream after it, but with a key no certificate ever named. (A chain shipped with a shared
// token has no incarnation: a stream with a pod uid starts a chain of its own, see collector-incarnations.)
test('a chain whose key was never certified (shipped without mTLS) cannot be continued by a CA-certified new key: refused, saying only the previous key can endorse', async (t) => {
  const issuer = await createTokenIssuer();
  const storeDir = join(await tempDir(t), 'store');
  const plain = await startTokenCollector(t, issuer, { storeDir });
  const dir = await tempDir(t);
  const identityTokenFile = join(dir, 'identity-token');
  await writeFile(identityTokenFile, await issuer.sign(LEDGER, { audience: 'auditmesh', expirationSeconds: 3600 }));
  const s1 = await startShippingSidecar(t, plain.grpcAddress, { collectorTokenFile: undefined, identityTokenFile, sidecarId: ID }, dir);
  await shipRound(s1, plain, 'a', 2, 2);
  const first = plain.sidecars().find((x) => x.id === ID)!;
  t.is(first.incarnation, LEDGER.pod.uid);
  await plain.close();
  const collector = await startIdentityCollector(t, issuer, { storeDir });
  await rm(join(dir, 'sidecar.key'));
  const s = await mtlsSidecar(t, collector, issuer, dir, LEDGER);
  t.is(await s.send('x'), 200);
  await eventually('the stream refused', () => refusalOf(collector) !== null);
  const refusal = refusalOf(collector)!;
  t.is(refusal.code, 'key-mismatch');
  t.regex(refusal.reason, new RegExp(`is certified as ${LEDGER_SPIFFE}, but the previous key ${first.key_id} has no mesh CA certificate: no certified identity to continue, so only ${first.key_id} can endorse the change`));
  t.is(collector.sidecars().find((x) => x.id === ID)!.key_id, first.key_id);
});
