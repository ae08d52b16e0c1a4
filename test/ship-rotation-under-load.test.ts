import test from 'ava';
import http from 'node:http';
import tls from 'node:tls';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { runCli, startCli } from './helpers/child.js';
import { createTokenIssuer } from './helpers/identity.js';
import { request, startUpstream } from './helpers/net.js';
import { startSidecarProcess } from './helpers/sidecar-process.js';
import { eventually } from './helpers/shipping.js';
import { tempDir } from './helpers/sidecar.js';

// The "certificates rotate under load with no refused request and no gap in the chain":
// a collector process with --cert-ttl 6s (its own serving certificate renews every 3 s, and every
// workload certificate it issues lives 6 s) and a sidecar process renewing at half-life, under
// steady traffic on real sockets for about 12 s.

const ID = 'shop/ledger-0';
const LEDGER = { namespace: 'shop', pod: { name: 'ledger-0', uid: 'u-1' }, serviceAccount: { name: 'ledger', uid: 's-1' } };
const LOAD_MS = 12_000;
const CONCURRENCY = 3;
const PAUSE_MS = 40;

/** The serial number of the certificate the collector's gRPC port serves now, checked against the mesh CA. */
function servingSerial(port: number, caPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: caPem, servername: 'localhost', ALPNProtocols: ['h2'] }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.on('error', reject);
  });
}

test('certificates rotate under steady load: every request answered 2xx, sidecar and collector renew several times, every record arrives, and the store verifies with no gap', async (t) => {
  const issuer = await createTokenIssuer();
  const dir = await tempDir(t);
  const jwks = join(dir, 'jwks.json');
  await writeFile(jwks, JSON.stringify(issuer.jwks()));
  const readerToken = 'reader-token-rotation';
  await writeFile(join(dir, 'readers'), `${readerToken} *\n`, { mode: 0o600 });
  const storeDir = join(dir, 'store');
  const caDir = join(dir, 'ca');
  const collector = startCli(t, ['collector', '--store', storeDir, '--grpc-port', '0', '--http-port', '0', '--ca-dir', caDir, '--cert-ttl', '6s', '--service-account-jwks', jwks, '--service-account-issuer', issuer.issuer, '--reader-token-file', join(dir, 'readers')]);
  const [, grpcPort, httpUrl] = await collector.waitFor(/"grpc":"127\.0\.0\.1:(\d+)","http":"(https:\/\/127\.0\.0\.1:\d+)"/, 120_000);
  t.regex(collector.output().stderr, /"msg":"--cert-ttl is for tests/);
  const caFile = join(caDir, 'ca.crt');
  const caPem = await readFile(caFile, 'utf8');
  const servedFirst = await servingSerial(Number(grpcPort), caPem);

  const identityTokenFile = join(dir, 'identity-token');
  await writeFile(identityTokenFile, await issuer.sign(LEDGER, { audience: 'auditmesh', expirationSeconds: 3600 }));
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecarDir = join(dir, 'sidecar');
  const sidecar = await startSidecarProcess(t, { appPort: app.port, dir: sidecarDir, args: ['--collector', `127.0.0.1:${grpcPort}`, '--identity-token-file', identityTokenFile, '--ca-file', caFile, '--sidecar-id', ID, '--service', 'ledger', '--checkpoint-interval-ms', '200'] });
  const sidecarLog = (): string => sidecar.running.output().stdout + sidecar.running.output().stderr;
  t.regex(sidecarLog(), /"msg":"workload certificate obtained"/);

  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  t.teardown(() => agent.destroy());
  const statuses: number[] = [];
  const started = Date.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, lane) => {
      for (let i = 0; Date.now() - started < LOAD_MS; i++) {
        statuses.push((await request(sidecar.ports.inbound, { path: `/load/${lane}/${i}`, agent })).status);
        await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
      }
    }),
  );
  const sent = statuses.length;
  t.true(sent >= 200, `hundreds of requests (${sent})`);
  t.deepEqual(statuses.filter((s) => s < 200 || s > 299), [], 'no request refused while certificates rotated');

  const renewals = (sidecarLog().match(/"msg":"workload certificate renewed"/g) ?? []).length;
  t.true(renewals >= 2, `the sidecar renewed its certificate ${renewals} times`);
  const servingRenewals = (collector.output().stderr.match(/"msg":"collector serving certificate renewed"/g) ?? []).length;
  t.true(servingRenewals >= 2, `the collector renewed its serving certificate ${servingRenewals} times`);
  t.not(await servingSerial(Number(grpcPort), caPem), servedFirst, 'new handshakes get the renewed serving certificate');
  t.log(`${sent} requests in ${Date.now() - started} ms; workload certificate renewed ${renewals} times, serving certificate ${servingRenewals} times`);

  const held = async (): Promise<{ last_seq: number | null; last_refusal: unknown; lost: unknown[] } | undefined> => {
    // With the mesh CA the collector's API serves HTTPS with its serving certificate.
    const res = await undiciFetch(`${httpUrl}/v1/sidecars`, { headers: { authorization: `Bearer ${readerToken}` }, dispatcher: new Agent({ connect: { ca: caPem } }) });
    return ((await res.json()) as Array<{ id: string; last_seq: number | null; last_refusal: unknown; lost: unknown[] }>).find((s) => s.id === ID);
  };
  await eventually(`the collector holding all ${sent} records`, async () => (await held())?.last_seq === sent, 60_000);
  const status = await held();
  t.is(status?.last_refusal, null, 'no stream was refused');
  t.deepEqual(status?.lost, []);

  await sidecar.stop();
  collector.child.kill('SIGTERM');
  t.is((await collector.done).code, 0);
  const store = await runCli(['verify', storeDir, '--ca-file', caFile]);
  t.is(store.code, 0, store.stdout + store.stderr);
  // The store names the chain by its incarnation: the pod uid of the token.
  t.regex(store.stdout, new RegExp(`^ok +${ID}@u-1 +key [0-9a-f]{16} +${sent} records in \\d+ links, batches 1-\\d+, seq ${sent},`, 'm'));
  t.regex(store.stdout, new RegExp(`collector store verified: ${sent} records of 1 sidecars`));
  const journal = await runCli(['verify', sidecar.journalDir, '--ca-file', caFile]);
  t.is(journal.code, 0, journal.stdout);
  t.regex(journal.stdout, new RegExp(`^${sent} records in \\d+ batches verified`, 'm'));
});

test('auditmesh collector --cert-ttl under 2s is refused at start, naming the minimum', async (t) => {
  const r = await runCli(['collector', '--store', join(await tempDir(t), 'store'), '--grpc-port', '0', '--http-port', '0', '--insecure', '--cert-ttl', '1s']);
  t.is(r.code, 2);
  t.regex(r.stderr, /--cert-ttl: at least 2s \(renewal is at half-life, at most once a second\)/);
});
