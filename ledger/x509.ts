import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/**
 * @peculiar/x509 set up once for both ends of the mesh: it needs the reflect-metadata polyfill
 * loaded before it, and Node's WebCrypto as its provider (Ed25519 leaves, ECDSA P-256 CA).
 */
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };

/** Workload and collector keys: Ed25519, as the journal signs with. */
export const ED25519 = { name: 'Ed25519' } as const;
