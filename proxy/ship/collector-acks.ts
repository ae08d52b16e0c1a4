import { X509Certificate, type KeyObject } from 'node:crypto';
import { collectorAckSigningInput, verifySignature, type CollectorAckKind } from '../../ledger/chain.js';
import { servingKeyOf } from '../../ledger/certified-key.js';
import type { Ack, Welcome } from '../../wire/sync-wire.js';

/**
 * What the shipper believes of a collector that the mesh CA vouches for (--ca-file): a Welcome
 * whose certificate chain is the CA's (serverAuth, valid now) for the key the TLS handshake
 * proved, signed with that key; then Acks signed with the same key. One checker per stream: the
 * collector's key may change between streams (renewal, another replica), so nothing is pinned.
 * Until a Welcome verifies, nothing is marked shipped; an Ack that does not verify moves nothing.
 */

/** Why a Welcome or an Ack was not believed: the label of auditmesh_shipper_unverified_acks_total. */
export type UnverifiedReason = 'unsigned' | 'bad-signature' | 'untrusted-certificate';

export interface Unverified {
  reason: UnverifiedReason;
  problem: string;
}

export interface CollectorAckCheck {
  /** null when the Welcome verifies (its key then checks the stream's Acks); else why not. */
  welcome(welcome: Welcome, tlsPeerCertificate: Buffer | undefined): Unverified | null;
  /** null when the Ack is signed by the key of the stream's verified Welcome. */
  ack(ack: Ack): Unverified | null;
}

/** A checker for one stream of sidecar `sidecarId` whose Hello presented key `keyId`. */
export function collectorAckCheck(ca: readonly X509Certificate[], sidecarId: string, keyId: string, now = Date.now): CollectorAckCheck {
  let key: KeyObject | null = null;
  const signed = (kind: CollectorAckKind, batch: number, head: string, sig: string | undefined, publicKey: KeyObject): Unverified | null => {
    if (sig === undefined || sig === '') return { reason: 'unsigned', problem: `the collector's ${kind === 'ack' ? 'Ack' : 'Welcome'} through batch ${batch} is not signed` };
    let input: Buffer;
    try {
      input = collectorAckSigningInput(kind, sidecarId, keyId, batch, head);
    } catch (err) {
      return { reason: 'bad-signature', problem: `the collector's ${kind} through batch ${batch} cannot be checked: ${(err as Error).message}` };
    }
    if (!verifySignature(input, sig, publicKey)) return { reason: 'bad-signature', problem: `the collector's ${kind} through batch ${batch} is not signed by the key of its certificate` };
    return null;
  };
  return {
    welcome(welcome, tlsPeerCertificate) {
      if (welcome.cert_chain_pem === undefined || welcome.cert_chain_pem === '') return { reason: 'unsigned', problem: 'the Welcome carries no certificate chain: a collector without the mesh CA' };
      const certified = servingKeyOf(welcome.cert_chain_pem, ca, now());
      if ('problem' in certified) return { reason: 'untrusted-certificate', problem: `the Welcome's certificate chain: ${certified.problem}` };
      // The key that signs must be the one the TLS server proved it holds: a certificate copied from elsewhere proves nothing.
      if (tlsPeerCertificate === undefined || !sameKey(tlsPeerCertificate, certified.key)) {
        return { reason: 'untrusted-certificate', problem: "the Welcome's certificate is not for the key of the TLS connection's server certificate" };
      }
      const problem = signed('welcome', welcome.acked_batch, welcome.acked_head, welcome.sig, certified.key);
      if (problem === null) key = certified.key;
      return problem;
    },
    ack(ack) {
      if (key === null) return { reason: 'unsigned', problem: 'an Ack before a verified Welcome' };
      return signed('ack', ack.through_batch, ack.head, ack.sig, key);
    },
  };
}

function sameKey(certificateDer: Buffer, key: KeyObject): boolean {
  try {
    return new X509Certificate(certificateDer).publicKey.equals(key);
  } catch {
    return false;
  }
}
