import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../command/log.js';

/**
 * Whether lmdb-js runs the LMDB that auditmesh patches (patches/lmdb+3.5.6.patch, applied and
 * compiled by `npm ci`'s postinstall). lmdb-js 3.5.6 ships LMDB without the fix of ITS#9496: a
 * process that opens an environment while another commits to it writes a stale transaction id
 * into the shared lock file, and the writer's next commit overwrites the last one. An
 * acknowledged commit is lost; `auditmesh verify` run against a live journal or store was enough.
 * The patch is upstream LMDB's one-line fix. lmdb-js loads `build/Release/lmdb.node` in preference
 * to its prebuilt binaries (node-gyp-build), so the patched build is in use exactly when it exists.
 */

/** The fixed line of mdb_env_open2(): only a reopen with MDB_PREVSNAPSHOT may set the shared txnid. */
const FIXED_LINE = '\tif (prev && env->me_txns)\n\t\tenv->me_txns->mti_txnid = meta.mm_txnid;';

export interface LmdbBuild {
  patched: boolean;
  /** Why not, and what to do, when not. */
  problem?: string;
}

let checked: LmdbBuild | undefined;

export function lmdbBuild(): LmdbBuild {
  checked ??= check();
  return checked;
}

function check(): LmdbBuild {
  const dir = dirname(fileURLToPath(import.meta.resolve('lmdb')));
  const fix = 'reinstall with install scripts on (npm ci, not --ignore-scripts; python3, make and g++ present) so that postinstall patches and compiles it';
  if (process.env.PREBUILDS_ONLY) return { patched: false, problem: `PREBUILDS_ONLY is set: lmdb-js loads its prebuilt LMDB, which lacks the fix of LMDB ITS#9496; unset it` };
  let source: string;
  try {
    source = readFileSync(join(dir, 'dependencies/lmdb/libraries/liblmdb/mdb.c'), 'utf8');
  } catch (err) {
    return { patched: false, problem: `cannot read lmdb-js's LMDB source (${(err as Error).message}); ${fix}` };
  }
  if (!source.includes(FIXED_LINE)) return { patched: false, problem: `lmdb-js's LMDB source lacks the fix of LMDB ITS#9496 (patches/lmdb+3.5.6.patch not applied); ${fix}` };
  if (!existsSync(join(dir, 'build/Release/lmdb.node'))) return { patched: false, problem: `lmdb-js runs its prebuilt LMDB, without the fix of LMDB ITS#9496 (${join(dir, 'build/Release/lmdb.node')} was not compiled); ${fix}` };
  return { patched: true };
}

/** What an unpatched build risks, said of `writer` (this process, or a journal's writer). */
export function unpatchedRisk(writer: string): string {
  return `another process opening the journal or store while it is written (auditmesh verify, a backup) can make ${writer} lose commits it has acknowledged`;
}

/** The error line a writer (sidecar, collector) logs at start when its LMDB is not the patched build. */
export function logIfUnpatched(log: Logger): void {
  const build = lmdbBuild();
  if (!build.patched) log('error', `lmdb is not the patched build: ${unpatchedRisk('this process')}`, { problem: build.problem });
}
