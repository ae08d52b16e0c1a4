import selfsigned from 'selfsigned';

/** A CA and a serving certificate signed by it, PEM-encoded. */
export interface WebhookCertificates {
  caCert: string;
  cert: string;
  key: string;
}

const DAY_MS = 86_400_000;

/**
 * A private CA and a serving certificate for `dnsNames` (the webhook Service's names), both
 * ECDSA P-256. The API server trusts the CA through the webhook's caBundle; nothing else does.
 */
export async function createWebhookCertificates(dnsNames: readonly string[], validDays: number, now = new Date()): Promise<WebhookCertificates> {
  const notAfterDate = new Date(now.getTime() + validDays * DAY_MS);
  // Backdated a little: nodes' clocks disagree.
  const notBeforeDate = new Date(now.getTime() - 3_600_000);
  const common = { keyType: 'ec' as const, curve: 'P-256' as const, algorithm: 'sha256', notBeforeDate, notAfterDate };
  const ca = await selfsigned.generate([{ name: 'commonName', value: 'auditmesh webhook CA' }], {
    ...common,
    extensions: [
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  const serving = await selfsigned.generate([{ name: 'commonName', value: dnsNames[0] ?? 'auditmesh-injector' }], {
    ...common,
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: dnsNames.map((value) => ({ type: 2 as const, value })) },
    ],
  });
  return { caCert: ca.cert, cert: serving.cert, key: serving.private };
}
