import { chainKey } from '../collector/store/chain-key.js';
import { existsSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { Agent, fetch as undiciFetch } from 'undici';
import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { flagsOf, optionalText, readSettings, text, whole } from '../../command/settings.js';
import type { CommandIO } from '../../command/io.js';
import { mergeBundles, type EvidenceBundle } from '../../ledger/evidence-bundle.js';
import { parseRecordQuery, QueryError, type CollectedRecord } from '../collector/api/record-query.js';
import { ProofError, type RecordRef } from '../collector/witness/bundle-builder.js';
import { openStoreProofs } from '../collector/witness/store-proofs.js';
import { FILTERS, setFilterParams } from './query.js';
import { READER_SETTINGS, readerCredentials, refusalAdvice, type ReaderCredentials } from './reader-credentials.js';

/** The most records one export gathers from a store (from a collector: what /v1/records answers at most). */
const MAX_EXPORT_RECORDS = 1_000_000;
/** Proof requests in flight at once against a collector. */
const PROOF_CONCURRENCY = 8;

const EXPORT_SETTINGS = {
  collector: optionalText({ name: 'collector', help: "the collector's HTTP address, e.g. http://127.0.0.1:9401 (or give a STORE folder instead)", env: 'AUDITMESH_COLLECTOR_URL' }),
  filters: FILTERS,
  limit: whole({ name: 'limit', default: 1000, help: 'at most this many records, newest first (from a collector: up to 10000)', env: false }),
  out: text({ name: 'out', default: '', help: 'the bundle file to write (required)', env: false }),
  reader: READER_SETTINGS,
};
const EXPORT_FLAGS: readonly FlagSpec[] = flagsOf(EXPORT_SETTINGS);

export const EXPORT_HELP = formatHelp(
  'auditmesh export (--collector URL | STORE) [--correlation-id ID] [--trace-id ID] [--service NAME] [--peer NAME] [--since 10m|TIME] [--until TIME] [--status 5xx|ok|error|NNN] [--namespace NS] [--limit N] --out FILE',
  "Writes a portable evidence bundle (docs/BUNDLE.md) of the records that match: each record with its\nMerkle inclusion path, the links to the signed head that seals it, the sidecars' keys and mesh CA\ncertificates, and the collector's signed tree heads with the paths that prove every head is in its\nwitness log. `auditmesh verify FILE` checks it offline. From a STORE folder (read only) the records\nmust be covered by a tree head the collector signed; from a running collector they always are.\nExit 0 written, 1 failed (nothing matched, a record could not be proved), 2 bad usage.",
  EXPORT_FLAGS,
);

interface ExportArgs {
  collector?: string;
  store?: string;
  params: URLSearchParams;
  limit: number;
  out: string;
  credentials: ReaderCredentials;
}

function parseExportArgs(argv: readonly string[], io: CommandIO): ExportArgs {
  const { values, positionals } = parseFlags(EXPORT_FLAGS, argv, io.env);
  const { collector, filters, limit, out, reader } = readSettings(EXPORT_SETTINGS, values, io.env);
  if (out === '') throw new UsageError('--out FILE is required for a bundle (or give --follow to print records as NDJSON)');
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`);
  const store = positionals[0];
  if ((collector === undefined) === (store === undefined)) throw new UsageError('give --collector URL or a STORE folder, one of them');
  if (store !== undefined && !existsSync(store)) throw new UsageError(`no collector store at ${store}`);
  const max = store === undefined ? 10_000 : MAX_EXPORT_RECORDS;
  if (limit < 1 || limit > max) throw new UsageError(`--limit: expected 1 to ${max}, got ${limit}`);
  const url = new URL('http://x/');
  setFilterParams(url, filters);
  url.searchParams.set('limit', String(limit));
  return { ...(collector === undefined ? {} : { collector: collector.replace(/^(?!https?:\/\/)/, 'http://') }), ...(store === undefined ? {} : { store }), params: url.searchParams, limit, out, credentials: readerCredentials(reader) };
}

/** `auditmesh export`: 0 written, 1 nothing to write or a record not provable, 2 bad usage. */
export async function exportMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(EXPORT_HELP);
    return 0;
  }
  let args: ExportArgs;
  try {
    args = parseExportArgs(argv, io);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh export: ${err.message}\n(see auditmesh export --help)\n`);
    return 2;
  }
  let bundle: EvidenceBundle | null;
  try {
    bundle = args.store !== undefined ? await fromStore(args, args.store) : await fromCollector(args, args.collector!, io);
  } catch (err) {
    if (err instanceof ExportRefused) {
      io.stderr.write(`auditmesh export: ${err.message}\n`);
      return err.usage ? 2 : 1;
    }
    if (err instanceof ProofError || err instanceof QueryError) {
      io.stderr.write(`auditmesh export: ${err.message}\n`);
      return err instanceof QueryError ? 2 : 1;
    }
    throw err;
  }
  if (bundle === null) {
    io.stderr.write('auditmesh export: no record matches; nothing written\n');
    return 1;
  }
  // Written whole or not at all.
  const temp = `${args.out}.${process.pid}.tmp`;
  const body = JSON.stringify(bundle) + '\n';
  await writeFile(temp, body, { mode: 0o600 });
  await rename(temp, args.out);
  const th = bundle.tree_heads[bundle.tree_heads.length - 1];
  io.stderr.write(`wrote ${args.out}: ${bundle.records.length} records of ${bundle.sidecars.length} sidecars, ${body.length} bytes, proved against the collector's tree head of size ${th.tree_size} (${new Date(th.unix_ms).toISOString()})\n`);
  return 0;
}

class ExportRefused extends Error {
  constructor(
    message: string,
    readonly usage = false,
  ) {
    super(message);
  }
}

async function fromStore(args: ExportArgs, dir: string): Promise<EvidenceBundle | null> {
  const proofs = openStoreProofs(dir);
  try {
    const q = parseRecordQuery(args.params);
    q.limit = args.limit;
    const refs: RecordRef[] = [];
    for await (const rec of proofs.query(q)) refs.push(recordRef(rec));
    return refs.length === 0 ? null : proofs.bundle(refs, `store ${dir}`);
  } finally {
    await proofs.close();
  }
}

async function fromCollector(args: ExportArgs, collector: string, io: CommandIO): Promise<EvidenceBundle | null> {
  const { headers, ca } = args.credentials;
  const dispatcher = ca === undefined ? undefined : new Agent({ connect: { ca } });
  const get = async (path: string, params: URLSearchParams): Promise<string> => {
    const url = new URL(`${path}?${params}`, collector);
    let res;
    try {
      res = await undiciFetch(url, { signal: io.signal, headers, dispatcher });
    } catch (err) {
      throw new ExportRefused(`cannot reach ${url.origin}: ${(err as Error).message}`);
    }
    const body = await res.text();
    const refused = refusalAdvice(res.status, body);
    if (refused !== null) throw new ExportRefused(refused, true);
    if (res.status === 409) throw new NotCovered(body.trim(), params.get('record') ?? '');
    if (res.status !== 200) throw new ExportRefused(`the collector answered ${res.status} to ${path}: ${body.trim()}`, res.status === 400);
    return body;
  };
  const refs = (await get('/v1/records', args.params))
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as CollectedRecord)
    .map(recordRef);
  if (refs.length === 0) return null;
  const proof = async (ref: RecordRef, treeSize?: number): Promise<EvidenceBundle> => {
    const params = new URLSearchParams({ record: `${ref.sidecar}:${ref.seq}` });
    if (treeSize !== undefined) params.set('tree_size', String(treeSize));
    return JSON.parse(await get('/v1/proof', params)) as EvidenceBundle;
  };
  // The first proof fixes the newest tree head (the collector signs one at once if that record needs
  // it); every other proof is pinned to it.
  let lead = refs[0];
  for (let attempt = 0; ; attempt++) {
    const first = await proof(lead);
    const size = first.tree_heads[first.tree_heads.length - 1].tree_size;
    try {
      const rest = await inPool(
        refs.filter((r) => r !== lead),
        PROOF_CONCURRENCY,
        (ref) => proof(ref, size),
      );
      return mergeBundles([first, ...rest]);
    } catch (err) {
      // A record logged after that tree head: lead with it, for a newer one.
      if (!(err instanceof NotCovered) || attempt >= 3) throw err instanceof NotCovered ? new ExportRefused(err.message) : err;
      lead = refs.find((r) => `${r.sidecar}:${r.seq}` === err.record) ?? lead;
    }
  }
}

class NotCovered extends Error {
  constructor(
    message: string,
    readonly record: string,
  ) {
    super(message);
  }
}

/** Maps `items` through `fn`, `width` at a time, in order. */
async function inPool<T, R>(items: readonly T[], width: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return out;
}

/** What a record is proven by: its chain (the sidecar id, and its incarnation where it has one) and sequence number. */
function recordRef(rec: { 'audit.sidecar_id': string; 'audit.seq': number; 'audit.incarnation'?: unknown }): RecordRef {
  return { sidecar: chainKey(rec['audit.sidecar_id'], typeof rec['audit.incarnation'] === 'string' ? rec['audit.incarnation'] : ''), seq: rec['audit.seq'] };
}
