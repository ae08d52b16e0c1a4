// Identity issuance: certificates a second the mesh CA signs through the real Certify RPC (a
// collector in its own process, TLS 1.3, a projected-ServiceAccount-shaped RS256 token checked
// against the issuer's JWKS, a CSR of a fresh Ed25519 key), against the CA signing the same
// keys in this process (no RPC, no token check) measured in the same run.
//
//   node --import=tsx bench/certify.ts     knobs: REQUESTS=300 (per row) CONCURRENCY=8 (calls in flight)
//
// Rows: the CA alone (baseline); Certify over a new TLS connection a call, as a sidecar calls it
// (proxy/identity/workload-identity.ts: once at start and at every half-life); Certify on one
// connection kept open (the RPC without the handshakes).
import { generateKeyPairSync, webcrypto, X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createWorkloadCsr } from '../proxy/identity/workload-csr.js';
import { ED25519 } from '../ledger/x509.js';
import { IdentityClient, type CertifyResponse } from '../wire/sync-wire.js';
import { identitySetup, startCollector } from './collector-process.js';
import { cpuTimeMs } from './proc-stats.js';
import { formatTable } from './table.js';

const REQUESTS = Number(process.env.REQUESTS ?? 300);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 8);
const PODS = 16;
const TTL_MS = 86_400_000;

type Certify = (csrPem: string, token: string) => Promise<CertifyResponse>;

function certifyOn(client: grpc.Client): Certify {
  return (csrPem, token) => {
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${token}`);
    return new Promise((resolve, reject) => {
      (client as unknown as { Certify(r: object, m: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: CertifyResponse) => void): void }).Certify({ csr_pem: csrPem }, metadata, (err, res) => (err ? reject(err) : resolve(res)));
    });
  };
}

/** Runs `call(i)` for i < REQUESTS, CONCURRENCY at a time; seconds taken. */
async function timed(call: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) await call(next++);
    }),
  );
  return (performance.now() - started) / 1000;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-certify-'));
  try {
    const { issuer, ca, serveArgs } = await identitySetup(dir);
    process.stderr.write(`making ${REQUESTS} keys, their CSRs and ${PODS} pods' tokens...\n`);
    const keys = Array.from({ length: REQUESTS }, () => generateKeyPairSync('ed25519'));
    const csrs = await Promise.all(keys.map((k) => createWorkloadCsr(k.privateKey)));
    const podTokens = await Promise.all(
      Array.from({ length: PODS }, (_, p) => issuer.sign({ namespace: 'bench', pod: { name: `pod-${p}`, uid: `u-${p}` }, serviceAccount: { name: `sa-${p % 4}`, uid: `s-${p % 4}` } }, { audience: 'auditmesh', expirationSeconds: 3600 })),
    );
    const publicKeys = await Promise.all(keys.map((k) => webcrypto.subtle.importKey('spki', k.publicKey.export({ format: 'der', type: 'spki' }), ED25519, true, ['verify'])));

    const direct = await timed((i) => ca.issue(publicKeys[i], { uris: [`spiffe://cluster.local/ns/bench/sa/sa-${i % 4}`] }, TTL_MS));

    const collector = await startCollector(join(dir, 'store'), serveArgs);
    const tls = grpc.credentials.createSsl(Buffer.from(ca.certPem));
    let perCall: number;
    let kept: number;
    let cpuPerCall: number | null = null;
    let cpuKept: number | null = null;
    try {
      // Warm-up: the collector's JIT and the JWKS read.
      const warm = new IdentityClient(collector.address, tls);
      const answer = await certifyOn(warm)(csrs[0], podTokens[0]);
      warm.close();
      const leaf = new X509Certificate(answer.cert_chain_pem);
      if (answer.spiffe_id !== 'spiffe://cluster.local/ns/bench/sa/sa-0' || !leaf.verify(new X509Certificate(ca.certPem).publicKey)) throw new Error(`unexpected certificate: ${answer.spiffe_id}`);

      let cpu0 = cpuTimeMs(collector.pid);
      perCall = await timed(async (i) => {
        // As a sidecar calls it: a client, so a TLS connection, for the one call.
        const client = new IdentityClient(collector.address, tls);
        try {
          await certifyOn(client)(csrs[i], podTokens[i % PODS]);
        } finally {
          client.close();
        }
      });
      let cpu1 = cpuTimeMs(collector.pid);
      if (cpu0 !== null && cpu1 !== null) cpuPerCall = cpu1 - cpu0;
      const client = new IdentityClient(collector.address, tls);
      const certify = certifyOn(client);
      cpu0 = cpuTimeMs(collector.pid);
      kept = await timed((i) => certify(csrs[i], podTokens[i % PODS]));
      cpu1 = cpuTimeMs(collector.pid);
      if (cpu0 !== null && cpu1 !== null) cpuKept = cpu1 - cpu0;
      client.close();
      const metrics = await (await fetch(`${collector.http}/metrics`)).text();
      const issued = Number(/^auditmesh_collector_certificates_issued_total (\d+)/m.exec(metrics)?.[1]);
      if (issued !== 2 * REQUESTS + 1) throw new Error(`the collector issued ${issued} certificates, expected ${2 * REQUESTS + 1}`);
    } finally {
      await collector.stop();
    }
    const ms = (cpu: number | null): string => (cpu === null ? '-' : (cpu / REQUESTS).toFixed(2));
    const row = (name: string, seconds: number, cpu: string): string[] => [name, String(REQUESTS), seconds.toFixed(2), Math.round(REQUESTS / seconds).toLocaleString('en'), cpu, (direct / seconds).toFixed(2)];
    process.stdout.write(
      formatTable(['path', 'certificates', 'seconds', 'per second', 'collector CPU ms each', 'vs CA alone'], [
        row('the mesh CA signing, in this process (baseline)', direct, '-'),
        row('Certify RPC, a new TLS connection a call (as sidecars call it)', perCall, ms(cpuPerCall)),
        row('Certify RPC, one connection kept', kept, ms(cpuKept)),
      ]) + '\n',
    );
    process.stdout.write(`RS256 tokens of ${PODS} pods checked against a JWKS file, CSRs of fresh Ed25519 keys made beforehand, certificates of ECDSA P-256 signed for ${TTL_MS / 3_600_000}h; ${CONCURRENCY} calls in flight; ${availableParallelism()} CPUs, load average ${loadavg()[0].toFixed(1)}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
