import { link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { headSigningInput, keyIdOf } from './chain.js';

/** A key file that cannot be used; the caller names the flag that points at it (keyFromFlag). */
export class KeyFileError extends Error {
  readonly code = 'AUDITMESH_KEY_FILE';
}

/**
 * Creates the key file atomically: written to a temp file (0600, folder 0700) and fsynced, then
 * linked into place and the folder fsynced, so a crash leaves either no key or the whole key,
 * never an empty one that would stop every later start. link(), unlike rename(), refuses to
 * replace an existing file: two processes starting together end up with one key, the loser
 * reading the winner's. Returns what is in the file afterwards.
 */
async function createExclusive(path: string, contents: Buffer): Promise<Buffer> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(temp, 'wx', 0o600);
  try {
    await fh.writeFile(contents);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(temp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return readKey(path);
  } finally {
    await unlink(temp).catch(() => {});
  }
  const folder = await open(dir, 'r');
  await folder.sync().finally(() => folder.close());
  return contents;
}

/** A key file's bytes; refuses an empty one (a key is never empty) with a way out. */
async function readKey(path: string): Promise<Buffer> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new KeyFileError(`cannot read the key file (${e.code ?? e.message})`, { cause: err });
  }
  if (bytes.length === 0) throw new KeyFileError('the key file is empty; remove it and a new key is created at the next start');
  return bytes;
}

/** The file's contents, or undefined if it does not exist. */
async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readKey(path);
  } catch (err) {
    if (((err as Error).cause as NodeJS.ErrnoException | undefined)?.code !== 'ENOENT') throw err;
    return undefined;
  }
}

/** Loads a key through `load`, naming the flag and the path in any error: `--key FILE: the key file is empty; …`. */
export async function keyFromFlag<T>(flag: string, path: string, load: (path: string) => Promise<T>): Promise<T> {
  try {
    return await load(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new KeyFileError(`${flag} ${path}: ${e instanceof KeyFileError ? e.message : `cannot use the key file (${e.code ?? e.message})`}`, { cause: err });
  }
}

/** Reads a secret key file, or creates it with owner-only permissions (0600) when absent. */
export async function loadOrCreateSecret(path: string, bytes = 32): Promise<Buffer> {
  const existing = await readIfExists(path);
  if (existing === undefined) return createExclusive(path, randomBytes(bytes));
  if (existing.length < 16) throw new KeyFileError(`the key file is too short (${existing.length} bytes, at least 16)`);
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
  /** The private key itself: the workload key the mesh CA certifies and mTLS authenticates with (proxy/identity/). */
  readonly privateKey: KeyObject;
}

function signingKeyFrom(privateKey: KeyObject): SigningKey {
  const publicKeySpki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  return {
    keyId: keyIdOf(publicKeySpki),
    publicKeySpki,
    privateKey,
    signHead: (head) => sign(null, headSigningInput(head), privateKey).toString('hex'),
    sign: (input) => sign(null, input, privateKey).toString('hex'),
  };
}

/** A key that lives only in memory: for tests and benchmarks, never for a sidecar. */
export function ephemeralSigningKey(): SigningKey {
  return signingKeyFrom(generateKeyPairSync('ed25519').privateKey);
}

/**
 * Key rotation: the operator renames the key file to `KEY.previous` and restarts the sidecar. It
 * creates a new key at `KEY`, the previous key signs the new boot epoch's key (the endorsement
 * `verify` checks), and the sidecar removes `KEY.previous` once that epoch link is committed.
 * Returns the previous key, or undefined when there is no `KEY.previous`.
 */
export async function loadPreviousSigningKey(path: string): Promise<SigningKey | undefined> {
  const previous = `${path}.previous`;
  if ((await readIfExists(previous)) === undefined) return undefined;
  return loadOrCreateSigningKey(previous);
}

/** Removes `KEY.previous` once the new key is endorsed: the old private key is no longer needed. */
export async function retirePreviousSigningKey(path: string): Promise<void> {
  await unlink(`${path}.previous`);
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
    throw new KeyFileError('the key file is not a PEM private key', { cause: err });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new KeyFileError(`the key file holds a ${privateKey.asymmetricKeyType} key, not Ed25519`);
  const { mode } = await stat(path);
  return { ...signingKeyFrom(privateKey), looseMode: (mode & 0o077) !== 0 };
}
