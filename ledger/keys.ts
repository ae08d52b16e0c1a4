import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { headSigningInput, keyIdOf } from './chain.js';

/**
 * Writes `contents` to a new file with owner-only permissions (0600, folder 0700). The exclusive
 * create means two processes starting together cannot end up with different keys: the loser
 * reads the winner's file. Returns what is in the file afterwards.
 */
async function createExclusive(path: string, contents: Buffer): Promise<Buffer> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  try {
    const fh = await open(path, 'wx', 0o600);
    await fh.writeFile(contents);
    await fh.close();
    return contents;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readFile(path);
    throw err;
  }
}

/** The file's contents, or undefined if it does not exist. */
async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return undefined;
  }
}

/** Reads a secret key file, or creates it with owner-only permissions (0600) when absent. */
export async function loadOrCreateSecret(path: string, bytes = 32): Promise<Buffer> {
  const existing = await readIfExists(path);
  if (existing === undefined) return createExclusive(path, randomBytes(bytes));
  if (existing.length < 16) throw new Error(`key file ${path} is too short (${existing.length} bytes)`);
  return existing;
}

/** The sidecar's Ed25519 identity: signs chain heads; its public key is recorded in the journal. */
export interface SigningKey {
  /** First 16 hex digits of SHA-256 over the public key's DER SPKI (chain.ts). */
  readonly keyId: string;
  /** The public key, DER SubjectPublicKeyInfo. */
  readonly publicKeySpki: Buffer;
  /** Ed25519 signature over `0x03 || head` (chain.ts), lowercase hex. */
  signHead(head: string): string;
  /** Ed25519 signature over already tagged signing input (chain.ts), lowercase hex. */
  sign(input: Buffer): string;
}

function signingKeyFrom(privateKey: KeyObject): SigningKey {
  const publicKeySpki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  return {
    keyId: keyIdOf(publicKeySpki),
    publicKeySpki,
    signHead: (head) => sign(null, headSigningInput(head), privateKey).toString('hex'),
    sign: (input) => sign(null, input, privateKey).toString('hex'),
  };
}

/** A key that lives only in memory: for tests and benchmarks, never for a sidecar. */
export function ephemeralSigningKey(): SigningKey {
  return signingKeyFrom(generateKeyPairSync('ed25519').privateKey);
}

/**
 * Loads the Ed25519 private key (PKCS#8 PEM) at `path`, or creates it, 0600 in a 0700 folder, at
 * first start. `looseMode` is true when the file is readable or writable by group or others:
 * the caller warns (a Kubernetes secret volume, say, with a permissive defaultMode).
 */
export async function loadOrCreateSigningKey(path: string): Promise<SigningKey & { looseMode: boolean }> {
  let pem = await readIfExists(path);
  if (pem === undefined) {
    const fresh = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' });
    pem = await createExclusive(path, Buffer.from(fresh));
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new Error(`signing key file ${path} is not a PEM private key`, { cause: err });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`signing key file ${path} holds a ${privateKey.asymmetricKeyType} key, not Ed25519`);
  const { mode } = await stat(path);
  return { ...signingKeyFrom(privateKey), looseMode: (mode & 0o077) !== 0 };
}
