import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';

// A real full disk: a small tmpfs, part of it taken by a filler file. Mounting needs root, which
// CI has (.ci/run runs as root); a developer's machine may not.

/** Why a tmpfs cannot be mounted here, or null when it can. */
export function mountProblem(): string | null {
  if (process.platform !== 'linux') return 'a tmpfs mount needs Linux';
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root';
  const probe = mkdtempSync(join(tmpdir(), 'auditmesh-tmpfs-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { stdio: 'pipe' });
    execFileSync('umount', [probe]);
    return null;
  } catch (err) {
    return `mount -t tmpfs failed: ${(err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message}`;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

/** A tmpfs of `bytes` mounted for the test, `fillerBytes` of it taken; freeUp() deletes the filler. */
export async function smallDisk(t: ExecutionContext, bytes: number, fillerBytes: number): Promise<{ dir: string; freeUp: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'auditmesh-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
  t.teardown(async () => {
    execFileSync('umount', ['--lazy', dir]);
    await rm(dir, { recursive: true, force: true });
  });
  const filler = join(dir, 'filler');
  writeFileSync(filler, Buffer.alloc(fillerBytes));
  return { dir, freeUp: () => rmSync(filler) };
}
