import { createPublicKey, hash, verify, type KeyObject } from 'node:crypto';
import { merkleRoot } from './merkle.js';

/**
 * The hash chain over the journal's batches, and the signatures on its heads: the one place the
 * binary encodings live, used by the journal writer and by every verifier alike.
 *
 * Every entry of the `batches` sub-database is a link. A link is a batch of records (its root is
 * the Merkle root of the records, merkle.ts), the opening of a boot epoch (root: the
 * epoch's signing key) or a checkpoint written when there was nothing else to sign (root: the
 * empty tree). Each link's head commits to the previous head and to everything in the link:
 *
 *   head_k = SHA-256( 0x02 || head_{k-1} || root_k || first_seq || count || time || batch || epoch || kind )
 *
 *   0x02        1 byte   domain tag: never a Merkle leaf (0x00) or node (0x01) input
 *   head_{k-1}  32 bytes the previous link's head; 32 zero bytes before the first link
 *   root_k      32 bytes see above
 *   first_seq   8 bytes  big-endian unsigned; for a link without records, the next sequence number
 *   count       4 bytes  big-endian unsigned; records in the link
 *   time        8 bytes  big-endian unsigned; sealed_unix_ms, whole milliseconds since the Unix epoch
 *   batch       8 bytes  big-endian unsigned; the link's number, contiguous from 1
 *   epoch       4 bytes  big-endian unsigned; the boot epoch the link was written in
 *   kind        1 byte   0 records, 1 epoch, 2 checkpoint
 *
 * Tags 0x04, 0x05 and 0x06 are the epoch-key root, heartbeats and Hellos, 0x09 the collector's
 * acknowledgements, below; 0x0b and 0x0c the collector's witness log entries and tree heads
 * (witness-log.ts). No two inputs signed by one key share a tag.
 *
 * Key changes (key-endorsement.ts). An epoch link whose key differs from the previous epoch's
 * must be endorsed, or every verifier refuses it. Either the link carries `endorsed_by` (the
 * previous key's id) and `endorsement`, an Ed25519 signature by the previous key over
 *
 *   0x07 || head_{k-1} (32 bytes) || epoch (4 bytes BE) || the new key's DER SPKI
 *
 * (head_{k-1}: the head the epoch link chains from, so the endorsement is good at one place in one
 * chain only); or, with the mesh CA bundle (`--ca-file`), the journal's key table holds, beside
 * the new key, `certificate`: the X.509 certificate (DER base64, or PEM) the mesh CA issued for
 * exactly that public key, whose URI SAN (SPIFFE ID) equals that of the previous key's certificate
 * when that one is known. These fields are not in the head: each proves itself by its signature.
 *
 * The prune mark (the last link retention removed; the oldest link left chains from its head)
 * names `epoch_key`, the key of the epoch that link was in, and is signed by the journal key
 * (`key`, `sig`) over
 *
 *   0x08 || head (32) || last_batch (8 BE) || last_seq (8 BE) || sealed_unix_ms (8 BE) || epoch_key (16 ASCII hex)
 *
 * The signing key must be `epoch_key` or a key the chain changes to after the mark.
 *
 * A head is signed with Ed25519 over `0x03 || head` (the tag keeps a signature over a head from
 * ever being valid for anything else the key signs). Keys are named by their id: the first 16 hex
 * digits of SHA-256 over the public key's DER SubjectPublicKeyInfo.
 */

export type LinkKind = 'records' | 'epoch' | 'checkpoint';

/** What a link's head commits to: the chained fields of a batch header. */
export interface LinkFields {
  batch: number;
  first_seq: number;
  count: number;
  /** Lowercase hex, 32 bytes. */
  root: string;
  sealed_unix_ms: number;
  epoch: number;
  kind: LinkKind;
}

/** Default longest time between two signed heads, with or without traffic: the sidecar's checkpoint and heartbeat cadence. */
export const CHECKPOINT_INTERVAL_MS = 5_000;

/** The head before the first link. */
export const GENESIS_HEAD = '0'.repeat(64);

/** Root of a checkpoint link: the Merkle tree hash of no records (RFC 9162: SHA-256 of ""). */
export const EMPTY_ROOT = merkleRoot([]).toString('hex');

const CHAIN_TAG = 0x02;
const HEAD_SIGNATURE_TAG = 0x03;
const EPOCH_KEY_TAG = 0x04;
const HEARTBEAT_TAG = 0x05;
const HELLO_TAG = 0x06;
// 0x07 and 0x08 are the key endorsement and the prune mark (key-endorsement.ts).
const COLLECTOR_ACK_TAG = 0x09;
const KIND_CODES: Record<LinkKind, number> = { records: 0, epoch: 1, checkpoint: 2 };
const LINK_BYTES = 1 + 32 + 32 + 8 + 4 + 8 + 8 + 4 + 1;
const TWO_32 = 2 ** 32;

function writeU64(buf: Buffer, value: number, offset: number): void {
  // Sequence numbers and times stay below 2^53, so two 32-bit halves carry them exactly.
  buf.writeUInt32BE(Math.floor(value / TWO_32), offset);
  buf.writeUInt32BE(value % TWO_32, offset + 4);
}

function hex32(value: string, what: string): Buffer {
  const bytes = Buffer.from(value, 'hex');
  if (bytes.length !== 32 || bytes.toString('hex') !== value) throw new TypeError(`${what} is not 32 bytes of lowercase hex`);
  return bytes;
}

/** The binary encoding of one link, exactly as hashed (see the top of this file). */
export function encodeLink(prevHead: string, link: LinkFields): Buffer {
  const code = KIND_CODES[link.kind];
  for (const [name, value] of [['first_seq', link.first_seq], ['count', link.count], ['sealed_unix_ms', link.sealed_unix_ms], ['batch', link.batch], ['epoch', link.epoch]] as const) {
    if (!Number.isSafeInteger(value) || value < 0) throw new TypeError(`link ${name} must be a non-negative whole number, not ${value}`);
  }
  if (code === undefined) throw new TypeError(`unknown link kind ${JSON.stringify(link.kind)}`);
  const buf = Buffer.allocUnsafe(LINK_BYTES);
  buf[0] = CHAIN_TAG;
  hex32(prevHead, 'previous head').copy(buf, 1);
  hex32(link.root, 'root').copy(buf, 33);
  writeU64(buf, link.first_seq, 65);
  buf.writeUInt32BE(link.count, 73);
  writeU64(buf, link.sealed_unix_ms, 77);
  writeU64(buf, link.batch, 85);
  buf.writeUInt32BE(link.epoch, 93);
  buf[97] = code;
  return buf;
}

/** head_k from head_{k-1} and link k, lowercase hex. Throws TypeError on a malformed field. */
export function linkHead(prevHead: string, link: LinkFields): string {
  return hash('sha256', encodeLink(prevHead, link), 'hex');
}

/** The id a key is known by: first 16 hex digits of SHA-256 over its DER SPKI. */
export function keyIdOf(spkiDer: Uint8Array): string {
  return hash('sha256', spkiDer, 'hex').slice(0, 16);
}

/** Root of an epoch link: binds the epoch's signing key into the chain. */
export function epochRoot(spkiDer: Uint8Array): string {
  return hash('sha256', Buffer.concat([Buffer.from([EPOCH_KEY_TAG]), spkiDer]), 'hex');
}

/** The bytes an Ed25519 signature over a head covers. */
export function headSigningInput(head: string): Buffer {
  return Buffer.concat([Buffer.from([HEAD_SIGNATURE_TAG]), hex32(head, 'head')]);
}

/**
 * The bytes a Hello's Ed25519 signature covers (wire/sync.proto):
 * `0x06 || unix_ms (8 bytes BE) || key_id (16 ASCII hex digits) || sidecar_id (UTF-8)`. It proves the
 * stream is opened by the holder of the key it presents, not by anyone holding a collector token.
 */
export function helloSigningInput(sidecarId: string, keyId: string, unixMs: number): Buffer {
  if (!/^[0-9a-f]{16}$/.test(keyId)) throw new Error('key_id must be 16 lowercase hex digits');
  const id = Buffer.from(sidecarId, 'utf8');
  const buf = Buffer.allocUnsafe(1 + 8 + 16 + id.length);
  buf[0] = HELLO_TAG;
  writeU64(buf, unixMs, 1);
  buf.write(keyId, 9, 'ascii');
  id.copy(buf, 25);
  return buf;
}

/** What signs a Hello: a SigningKey (keys.ts), which imports this module, so the shape is stated here. */
export interface HelloSigner {
  readonly keyId: string;
  sign(input: Buffer): string;
}

/** A Hello's `unix_ms` and `sig`: signed by the sidecar's own key, at `unixMs` (now). */
export function signHello(signer: HelloSigner, sidecarId: string, unixMs = Date.now()): { unix_ms: number; sig: string } {
  return { unix_ms: unixMs, sig: signer.sign(helloSigningInput(sidecarId, signer.keyId, unixMs)) };
}

/**
 * The bytes a heartbeat's Ed25519 signature covers (wire/sync.proto):
 * `0x05 || unix_ms (8 bytes BE) || last_batch (8 bytes BE) || head (32 bytes) || sidecar_id (UTF-8)`.
 */
export function heartbeatSigningInput(sidecarId: string, unixMs: number, lastBatch: number, head: string): Buffer {
  const id = Buffer.from(sidecarId, 'utf8');
  const buf = Buffer.allocUnsafe(1 + 8 + 8 + 32 + id.length);
  buf[0] = HEARTBEAT_TAG;
  writeU64(buf, unixMs, 1);
  writeU64(buf, lastBatch, 9);
  hex32(head, 'head').copy(buf, 17);
  id.copy(buf, 49);
  return buf;
}

/** What a collector acknowledgement states: where the collector resumes a stream (Welcome) or what it stored (Ack). */
export type CollectorAckKind = 'welcome' | 'ack';

const ACK_KIND_CODES: Record<CollectorAckKind, number> = { welcome: 0, ack: 1 };

/**
 * The bytes the collector's Ed25519 signature on a Welcome or an Ack covers (wire/sync.proto),
 * signed with the collector's serving key (the key of its mesh CA certificate):
 *
 *   0x09 || kind (1 byte: 0 Welcome, 1 Ack) || batch (8 bytes BE) || head (32 bytes) || key_id (16 ASCII hex digits) || sidecar_id (UTF-8)
 *
 * batch and head: the Welcome's acked_batch and acked_head, the Ack's through_batch and head.
 * key_id: the sidecar key its Hello presented. So a signature holds for one statement about one
 * sidecar's chain under one of its keys, and never for anything else the key signs.
 */
export function collectorAckSigningInput(kind: CollectorAckKind, sidecarId: string, keyId: string, batch: number, head: string): Buffer {
  if (!/^[0-9a-f]{16}$/.test(keyId)) throw new TypeError('key_id must be 16 lowercase hex digits');
  if (!Number.isSafeInteger(batch) || batch < 0) throw new TypeError(`batch must be a non-negative whole number, not ${batch}`);
  const id = Buffer.from(sidecarId, 'utf8');
  const buf = Buffer.allocUnsafe(1 + 1 + 8 + 32 + 16 + id.length);
  buf[0] = COLLECTOR_ACK_TAG;
  buf[1] = ACK_KIND_CODES[kind];
  writeU64(buf, batch, 2);
  hex32(head, 'head').copy(buf, 10);
  buf.write(keyId, 42, 'ascii');
  id.copy(buf, 58);
  return buf;
}

/** Checks an Ed25519 signature (hex) over arbitrary signing input. Returns false, never throws. */
export function verifySignature(input: Buffer, signatureHex: string, key: KeyObject): boolean {
  try {
    return verify(null, input, key, Buffer.from(signatureHex, 'hex'));
  } catch {
    return false;
  }
}

/** An Ed25519 public key from its DER SPKI, or null if the bytes are not one. */
export function publicKeyFromSpki(spkiDer: Uint8Array): KeyObject | null {
  try {
    const key = createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' });
    return key.asymmetricKeyType === 'ed25519' ? key : null;
  } catch {
    return null;
  }
}

/** Checks an Ed25519 signature (hex) over a head. Returns false, never throws, on bad input. */
export function verifyHeadSignature(head: string, signatureHex: string, key: KeyObject): boolean {
  try {
    return verifySignature(headSigningInput(head), signatureHex, key);
  } catch {
    return false; // a malformed head
  }
}
