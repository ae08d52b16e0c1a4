import { mkdir, open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Reads a secret key file, or creates it with owner-only permissions (0600) when absent. The
 * exclusive create means two processes starting together cannot end up with different keys.
 */
export async function loadOrCreateSecret(path: string, bytes = 32): Promise<Buffer> {
  try {
    const existing = await readFile(path);
    if (existing.length < 16) throw new Error(`key file ${path} is too short (${existing.length} bytes)`);
    return existing;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const key = randomBytes(bytes);
  try {
    const fh = await open(path, 'wx', 0o600);
    await fh.writeFile(key);
    await fh.close();
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readFile(path);
    throw err;
  }
}
