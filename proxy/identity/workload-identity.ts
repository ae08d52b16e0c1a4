import { readFile } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { IdentityClient, type CertifyResponse } from '../../wire/sync-wire.js';
import type { Logger } from '../../command/log.js';
import { createWorkloadCsr } from './workload-csr.js';

/**
 * The sidecar's workload certificate: its journal key certified by the mesh CA (Certify on the
 * collector's port, over TLS trusting --ca-file, with the projected token of
 * --identity-token-file), obtained before the sidecar serves and renewed at half-life. Each new
 * connection takes the current certificate; open ones finish on the one they started with.
 */
export interface WorkloadCertificate {
  readonly caPem: string;
  /** The current certificate chain and its SPIFFE ID. */
  current(): { chainPem: string; spiffeId: string; notAfterUnixMs: number };
  /** TLS credentials presenting the current certificate, trusting only the mesh CA. */
  credentials(): grpc.ChannelCredentials;
  close(): void;
}

export interface WorkloadCertificateOptions {
  target: string;
  tokenFile: string;
  caFile: string;
  privateKey: KeyObject;
  log: Logger;
  /** First retry delay after a failed Certify; doubles up to retryMaxMs. */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Called after each renewal (tests, metrics). */
  onRenewed?: (notAfterUnixMs: number) => void;
}

const RETRY_BASE_MS = 200;
const RETRY_MAX_MS = 30_000;
const CERTIFY_DEADLINE_MS = 10_000;

export async function obtainWorkloadCertificate(opts: WorkloadCertificateOptions): Promise<WorkloadCertificate> {
  const caPem = await readFile(opts.caFile, 'utf8');
  const keyPem = Buffer.from(opts.privateKey.export({ format: 'pem', type: 'pkcs8' }));
  let cert = await untilCertified(opts, caPem);
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const schedule = (): void => {
    const halfLifeMs = Math.max(1000, (cert.not_after_unix_ms - Date.now()) / 2);
    timer = setTimeout(() => void renew(), halfLifeMs);
    timer.unref();
  };
  const renew = async (): Promise<void> => {
    const next = await untilCertified(opts, caPem, () => closed);
    if (next === null || closed) return;
    cert = next;
    opts.log('info', 'workload certificate renewed', { spiffe_id: cert.spiffe_id, not_after_unix_ms: cert.not_after_unix_ms });
    opts.onRenewed?.(cert.not_after_unix_ms);
    schedule();
  };
  opts.log('info', 'workload certificate obtained', { spiffe_id: cert.spiffe_id, not_after_unix_ms: cert.not_after_unix_ms });
  schedule();
  return {
    caPem,
    current: () => ({ chainPem: cert.cert_chain_pem, spiffeId: cert.spiffe_id, notAfterUnixMs: cert.not_after_unix_ms }),
    credentials: () => grpc.credentials.createSsl(Buffer.from(caPem), keyPem, Buffer.from(cert.cert_chain_pem)),
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}

/** Certify until it answers (the collector may not be up yet); each failure logged with why. */
async function untilCertified(opts: WorkloadCertificateOptions, caPem: string, stop?: () => boolean): Promise<CertifyResponse>;
async function untilCertified(opts: WorkloadCertificateOptions, caPem: string, stop: () => boolean): Promise<CertifyResponse | null>;
async function untilCertified(opts: WorkloadCertificateOptions, caPem: string, stop = () => false): Promise<CertifyResponse | null> {
  let delayMs = opts.retryBaseMs ?? RETRY_BASE_MS;
  for (;;) {
    try {
      return await certify(opts, caPem);
    } catch (err) {
      if (stop()) return null;
      opts.log('warn', 'mesh CA did not certify the workload key; retrying', { collector: opts.target, err: (err as Error).message, retry_ms: delayMs });
      await new Promise((resolve) => setTimeout(resolve, delayMs).unref());
      delayMs = Math.min(delayMs * 2, opts.retryMaxMs ?? RETRY_MAX_MS);
    }
  }
}

async function certify(opts: WorkloadCertificateOptions, caPem: string): Promise<CertifyResponse> {
  // The kubelet rotates the token: read it for every request.
  const token = (await readFile(opts.tokenFile, 'utf8')).trim();
  const csr = await createWorkloadCsr(opts.privateKey);
  const client = new IdentityClient(opts.target, grpc.credentials.createSsl(Buffer.from(caPem)));
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  try {
    return await new Promise<CertifyResponse>((resolve, reject) => {
      const call = client as unknown as { Certify(r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: CertifyResponse) => void): void };
      call.Certify({ csr_pem: csr }, metadata, { deadline: Date.now() + CERTIFY_DEADLINE_MS }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  } finally {
    client.close();
  }
}
