import test from 'ava';
import { join } from 'node:path';
import { createTokenIssuer, startIdentityCollector, startIdentitySidecar } from './helpers/identity.js';
import { eventually } from './helpers/shipping.js';
import { tempDir } from './helpers/sidecar.js';
import type { TestCollector } from './helpers/collector.js';

// A sidecar with --identity-token-file and --ca-file: it has its journal key certified by the
// mesh CA before it serves, ships over mTLS, and renews at half-life without a refused request.

async function stored(collector: TestCollector): Promise<number> {
  const res = await collector.get('/v1/records?service=ledger&limit=1000', collector.readAuth);
  if (!res.ok) throw new Error(`/v1/records: ${res.status} ${await res.text()}`);
  return (await res.text()).split('\n').filter((l) => l !== '').length;
}

test('a sidecar with an identity token and the CA bundle ships its records over mTLS under its pod id', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const s = await startIdentitySidecar(t, collector, issuer);
  t.true(s.logged.some((l) => l.includes('workload certificate obtained') && l.includes('spiffe://cluster.local/ns/shop/sa/ledger')), 'certified before it served');
  for (const id of ['a', 'b', 'c']) t.is(await s.send(id), 200);
  await eventually('3 records stored', async () => (await stored(collector)) === 3);
  t.deepEqual(collector.sidecars().map((x) => x.id), ['shop/ledger-0']);
});

test('the workload certificate is renewed at half-life while requests flow: none refused, every record shipped', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer, { identity: { caDir: join(await tempDir(t), 'ca'), createCa: true, certTtlMs: 4_000 } });
  const s = await startIdentitySidecar(t, collector, issuer);
  const statuses: number[] = [];
  let n = 0;
  const started = Date.now();
  while (s.logged.filter((l) => l.includes('workload certificate renewed')).length < 2) {
    if (Date.now() - started > 30_000) throw new Error(`no two renewals within 30 s: ${s.logged.join('\n')}`);
    statuses.push(await s.send(`r${n++}`));
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.true(statuses.every((x) => x === 200), 'no request refused while the certificate rotated');
  await eventually(`${n} records stored`, async () => (await stored(collector)) === n);
  const metrics = await (await collector.get('/metrics')).text();
  t.regex(metrics, /auditmesh_collector_certificates_issued_total [3-9]/);
});
