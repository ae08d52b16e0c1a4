import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { choice, flagsOf, optionalText, readSettings } from '../../command/settings.js';
import { caBundleFrom } from '../../ledger/certified-key.js';
import { lmdbBuild, unpatchedRisk } from '../../ledger/lmdb-build.js';
import { withSnapshot } from '../../ledger/read-journal.js';
import { verifySnapshot, type VerifyOptions, type VerifyReport } from '../../ledger/verify-journal.js';
import type { KeyChange } from '../../ledger/link-verifier.js';
import { isCollectorStore, verifyStoreDir, type StoreReport } from '../collector/store/verify-store.js';
import type { CommandIO } from '../../command/io.js';
import type { X509Certificate } from 'node:crypto';
import { verifyBundle, type BundleReport, type EvidenceBundle } from '../../ledger/evidence-bundle.js';
import { parseRecordRef, ProofError } from '../collector/witness/bundle-builder.js';
import { openStoreProofs, type StoreProofs } from '../collector/witness/store-proofs.js';
import type { WitnessReport } from '../collector/witness/verify-witness.js';
import { parseJetStreamUrls, type JetStreamConfig } from '../collector/jetstream/nats-connect.js';
import { verifyJetStream, type StreamReport } from '../collector/jetstream/verify-stream.js';

const HEX_HEAD = /^[0-9a-f]{64}$/;

const VERIFY_SETTINGS = {
  expectHead: optionalText({ name: 'expect-head', help: 'a head seen elsewhere (an earlier verify, a "journal checkpoint" log line): it must be in the chain', env: false }, (value) => {
    if (!HEX_HEAD.test(value)) throw new UsageError('--expect-head: expected 64 lowercase hex digits');
  }),
  expectKey: optionalText({ name: 'expect-key', help: 'key id every head must be signed with', env: false }),
  caFile: optionalText({ name: 'ca-file', help: 'the mesh CA bundle (PEM): a key change whose new key it certifies, for the same SPIFFE ID, is endorsed', env: false }),
  record: optionalText({ name: 'record', help: "also print a record, its proofs and what they prove against, and check them: SEQ in a journal, SIDECAR_ID:SEQ in a collector store (up to the collector's newest signed tree head)", env: false }),
  jetstreamCreds: optionalText({ name: 'jetstream-creds', help: 'with nats://…: NATS credentials file', env: false }),
  jetstreamCaFile: optionalText({ name: 'jetstream-ca-file', help: "with nats://…: CA bundle (PEM) the NATS servers' TLS certificates are checked against", env: false }),
  output: choice<'table' | 'json'>({ name: 'output', short: 'o', choices: ['table', 'json'], default: 'table', help: 'json: the result as one JSON object', env: false }),
};
const VERIFY_FLAGS: readonly FlagSpec[] = flagsOf(VERIFY_SETTINGS);

export const VERIFY_HELP = formatHelp(
  'auditmesh verify PATH [--expect-head HASH] [--expect-key ID] [--ca-file FILE] [--record SEQ|SIDECAR_ID:SEQ] [-o json]',
  'Verifies a sidecar journal offline: every record, Merkle root, chain link and signature, and that\nsequence numbers run on without a hole. Every key change (a boot epoch with a new key) must be\nendorsed, by the previous key or (with --ca-file) by a mesh CA certificate of the new key; the\nprune mark must be signed by a key of the chain. Reads one consistent snapshot, so a journal being written\nmeanwhile is fine. PATH may also be a collector store (--store of `auditmesh collector`): then\nevery chain in it, one per sidecar incarnation (ID@POD_UID), is verified end to end with the\nkeys the collector pinned (--ca-file applies as for a journal; the --expect-* flags are for\njournals; --record SIDECAR_ID:SEQ proves one record up to the signed tree head of the\ncollector, SIDECAR_ID with @POD_UID for an incarnation). PATH may also be a bundle file of\n`auditmesh export`: every proof in it is checked with no network (--ca-file pins the mesh CA its\ncertifications must chain to). PATH nats://HOST:PORT[,nats://…] verifies a collector tier on NATS\nJetStream the same way, from its stream. Exit 0 if everything verifies, 1 naming the first sidecar, batch,\nrecord, key or tree head that does not.',
  VERIFY_FLAGS,
);

interface VerifyArgs {
  path: string;
  opts: VerifyOptions;
  /** --record as given: SEQ for a journal, SIDECAR_ID:SEQ for a store. */
  recordRef?: string;
  json: boolean;
  jetstream?: JetStreamConfig;
}

function parseVerifyArgs(argv: readonly string[], env: CommandIO['env']): VerifyArgs {
  const { values, positionals } = parseFlags(VERIFY_FLAGS, argv, env);
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'PATH (the journal folder) is required' : `unexpected argument ${JSON.stringify(positionals[1])}`);
  const { output, caFile, record: recordRef, jetstreamCreds, jetstreamCaFile, ...opts } = readSettings(VERIFY_SETTINGS, values, env);
  if (/^(nats|tls):\/\//.test(positionals[0])) {
    let urls;
    try {
      urls = parseJetStreamUrls(positionals[0]);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    return { path: positionals[0], opts, json: output === 'json', jetstream: { urls, credsFile: jetstreamCreds, caFile: jetstreamCaFile } };
  }

  if (!existsSync(positionals[0])) throw new UsageError(`no journal at ${positionals[0]}`);
  let ca;
  try {
    ca = caFile === undefined ? undefined : caBundleFrom(readFileSync(caFile, 'utf8'));
  } catch (err) {
    throw new UsageError(`--ca-file ${caFile}: ${(err as Error).message}`);
  }
  return { path: positionals[0], opts: { ...opts, ca }, ...(recordRef === undefined ? {} : { recordRef }), json: output === 'json' };
}

/** --record for a journal: a sequence number. */
function journalRecord(ref: string | undefined): number | undefined {
  if (ref === undefined) return undefined;
  if (!/^\d+$/.test(ref) || Number(ref) < 1) throw new UsageError(`--record: a journal's record is a sequence number from 1, got ${JSON.stringify(ref)}`);
  return Number(ref);
}

/** `auditmesh verify PATH`: exit 0 verified, 1 not (names the first failure), 2 bad usage. */
export async function verifyMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(VERIFY_HELP);
    return 0;
  }
  let args;
  try {
    args = parseVerifyArgs(argv, io.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh verify: ${err.message}\n(see auditmesh verify --help)\n`);
    return 2;
  }
  if (args.jetstream !== undefined) return verifyTierMain(args, args.jetstream, io);
  // LMDB's ITS#9496 runs in the process that opens the environment: this one.
  const build = lmdbBuild();
  if (!build.patched) io.stderr.write(`auditmesh verify: warning: ${build.problem}. Opening a journal or store that is being written from this install: ${unpatchedRisk('its writer')}\n`);
  if (statSync(args.path).isFile()) return verifyBundleMain(args, io);
  if (await isCollectorStore(args.path).catch(() => false)) return verifyStoreMain(args, io);
  let report: VerifyReport;
  try {
    const record = journalRecord(args.recordRef);
    report = await withSnapshot(args.path, (snapshot) => verifySnapshot(snapshot, { ...args.opts, ...(record === undefined ? {} : { record }) }));
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`auditmesh verify: ${err.message}\n`);
      return 2;
    }
    io.stderr.write(`auditmesh verify: cannot read a journal at ${args.path}: ${(err as Error).message}\n`);
    return 1;
  }
  io.stdout.write(args.json ? JSON.stringify(report) + '\n' : formatReport(report));
  return report.ok ? 0 : 1;
}

/** A JetStream tier: every chain from its stream, the same report as for a store. */
async function verifyTierMain(args: VerifyArgs, config: JetStreamConfig, io: CommandIO): Promise<number> {
  if (!journalOnlyFlagsAbsent(args, 'a JetStream tier', io)) return 2;
  let report: StreamReport;
  try {
    report = await verifyJetStream(config);
  } catch (err) {
    io.stderr.write(`auditmesh verify: cannot read the JetStream tier at ${args.path}: ${(err as Error).message}\n`);
    return 1;
  }
  io.stdout.write(args.json ? JSON.stringify(report) + '\n' : formatStoreReport(report));
  return report.ok ? 0 : 1;
}

function journalOnlyFlagsAbsent(args: VerifyArgs, what: string, io: CommandIO): boolean {
  const { expectHead, expectKey } = args.opts;
  if (expectHead === undefined && expectKey === undefined && args.recordRef === undefined) return true;
  io.stderr.write(`auditmesh verify: ${args.path} is ${what}; --expect-head, --expect-key and --record apply to a sidecar journal or a collector store\n`);
  return false;
}

async function verifyStoreMain(args: VerifyArgs, io: CommandIO): Promise<number> {
  const { expectHead, expectKey } = args.opts;
  if (expectHead !== undefined || expectKey !== undefined) {
    io.stderr.write(`auditmesh verify: ${args.path} is a collector store; --expect-head and --expect-key apply to a sidecar journal\n`);
    return 2;
  }
  let ref;
  try {
    ref = args.recordRef === undefined ? undefined : parseRecordRef(args.recordRef);
  } catch (err) {
    io.stderr.write(`auditmesh verify: --record: in a collector store a record is SIDECAR_ID:SEQ (${(err as Error).message})\n`);
    return 2;
  }
  let report: StoreReport;
  let witness: WitnessReport;
  let proved: { bundle: EvidenceBundle; report: BundleReport } | { problem: string } | undefined;
  try {
    report = await verifyStoreDir(args.path, { ca: args.opts.ca });
    const proofs = openStoreProofs(args.path);
    try {
      witness = proofs.verifyWitness();
      if (ref !== undefined) proved = proveFrom(proofs, args.path, ref, args.opts.ca);
    } finally {
      await proofs.close();
    }
  } catch (err) {
    io.stderr.write(`auditmesh verify: cannot read the collector store at ${args.path}: ${(err as Error).message}\n`);
    return 1;
  }
  const ok = report.ok && witness.ok && (proved === undefined || ('report' in proved && proved.report.ok));
  if (args.json) io.stdout.write(JSON.stringify({ ...report, ok, witness, ...(proved === undefined ? {} : { record: proved }) }) + '\n');
  else io.stdout.write((proved === undefined ? '' : formatRecordProof(proved)) + formatWitnessReport(witness) + formatStoreReport(report));
  return ok ? 0 : 1;
}

/** The witness log's verdict, one line. */
function formatWitnessReport(w: WitnessReport): string {
  if (!w.ok) return `witness log FAILED: ${w.failure}\n`;
  const newest = w.newest === undefined ? 'no tree head signed yet' : `newest tree head of size ${w.newest.tree_size} (${new Date(w.newest.unix_ms).toISOString()}, collector key ${w.newest.key_id})`;
  const unlogged = w.unlogged === 0 ? 'every stored link is in it' : `${w.unlogged} stored links not yet in it (the collector logs them after storing, and at its next start)`;
  return `witness log verified: ${w.entries} entries, ${w.tree_heads} signed tree heads, ${newest}; ${unlogged}; ${w.prunes} prunings logged\n`;
}

/** One record's bundle out of the store, and its verdict; or why it cannot be proved. */
function proveFrom(proofs: StoreProofs, dir: string, ref: { sidecar: string; seq: number }, ca: readonly X509Certificate[] | undefined): { bundle: EvidenceBundle; report: BundleReport } | { problem: string } {
  try {
    const bundle = proofs.bundle([ref], `store ${dir}`);
    return { bundle, report: verifyBundle(bundle, ca) };
  } catch (err) {
    if (err instanceof ProofError) return { problem: `record ${ref.sidecar}:${ref.seq}: ${err.message}` };
    throw err;
  }
}

/** A record's proof for people: where it sits, what it chains to, where the collector's log holds it. */
export function formatRecordProof(proved: { bundle: EvidenceBundle; report: BundleReport } | { problem: string }): string {
  if ('problem' in proved) return `record proof FAILED: ${proved.problem}\n`;
  const { bundle, report } = proved;
  const r = bundle.records[0];
  const s = bundle.sidecars.find((x) => x.id === r.sidecar)!;
  const link = s.links.find((l) => l.batch === r.batch)!;
  const sealed = s.links.find((l) => l.batch >= r.batch && l.sig !== undefined);
  const w = s.witness.find((x) => x.batch === sealed?.batch);
  const newest = bundle.tree_heads[bundle.tree_heads.length - 1];
  const lines = [`record ${r.sidecar}:${r.seq}: leaf ${r.index} of ${link.count} in batch ${r.batch}`, Buffer.from(r.bytes, 'base64').toString('utf8')];
  for (const [i, node] of r.path.entries()) lines.push(`path ${String(i).padEnd(6)} ${node}`);
  lines.push(`root        ${link.root} (batch ${r.batch})`);
  if (sealed !== undefined) lines.push(`signed head ${sealed.head} (batch ${sealed.batch}, key ${sealed.key})`);
  if (w !== undefined) lines.push(`witnessed   leaf ${w.index} of the collector's log, in its tree head of size ${w.tree_size}; newest tree head: size ${newest.tree_size}, ${new Date(newest.unix_ms).toISOString()}, collector key ${newest.key_id}`);
  lines.push(report.ok ? `record ${r.sidecar}:${r.seq} is proved, up to the collector's signed tree head` : `record proof FAILED at ${report.failure!.where}: ${report.failure!.problem}`);
  return lines.join('\n') + '\n';
}

async function verifyBundleMain(args: VerifyArgs, io: CommandIO): Promise<number> {
  const { expectHead, expectKey } = args.opts;
  if (expectHead !== undefined || expectKey !== undefined || args.recordRef !== undefined) {
    io.stderr.write(`auditmesh verify: ${args.path} is a bundle file; --expect-head, --expect-key and --record apply to journals and stores\n`);
    return 2;
  }
  let bundle: EvidenceBundle;
  try {
    bundle = JSON.parse(await readFile(args.path, 'utf8')) as EvidenceBundle;
  } catch (err) {
    io.stderr.write(`auditmesh verify: ${args.path} is neither a journal, a collector store nor a bundle: ${(err as Error).message}\n`);
    return 1;
  }
  const report = verifyBundle(bundle, args.opts.ca);
  io.stdout.write(args.json ? JSON.stringify(report) + '\n' : formatBundleReport(report));
  return report.ok ? 0 : 1;
}

/** The verdict on a bundle: notes (reported, not failed), then one line. */
export function formatBundleReport(r: BundleReport): string {
  const lines = r.notes.map((n) => `note: ${n}`);
  if (!r.ok) lines.push(`verification FAILED at ${r.failure!.where}: ${r.failure!.problem}`);
  else {
    const th = r.tree_head!;
    lines.push(`bundle verified: ${r.records} records of ${r.sidecars} sidecars, each included in its batch, chained to a signed head, in the collector's log up to its tree head of size ${th.tree_size} (${new Date(th.unix_ms).toISOString()}, collector key ${th.key_id}; ${r.tree_heads} tree heads, consistent)`);
  }
  return lines.join('\n') + '\n';
}

/** One line per chain (a sidecar's incarnation as `ID@POD_UID`), then the verdict naming the first failure. */
export function formatStoreReport(r: StoreReport | StreamReport): string {
  const lines = r.sidecars.flatMap((s) => {
    const state = s.ok ? 'ok    ' : 'FAILED';
    const changes = s.key_changes.map((c) => `       ${s.chain}: ${keyChangeLine(c)}`);
    return [`${state} ${s.chain.padEnd(24)} key ${s.key_id}  ${s.records} records in ${s.links} links, batches ${s.first_batch}-${s.last_batch}, seq ${s.last_seq ?? '-'}, head ${s.head}`, ...changes];
  });
  if (r.failure !== undefined) {
    const { sidecar, seq, batch, problem } = r.failure;
    const where = seq !== undefined ? `record ${seq}` : batch !== undefined ? `batch ${batch}` : 'its chain';
    lines.push(`verification FAILED: sidecar ${sidecar}, ${where}: ${problem}`);
  } else {
    const sidecars = new Set(r.sidecars.map((s) => s.id)).size;
    const chains = r.sidecars.length === sidecars ? '' : ` in ${r.sidecars.length} chains (incarnations)`;
    const tier = r.kind === 'jetstream' ? `; ${r.stream_messages} stream messages, ${r.duplicates} stored twice, ${r.unacknowledged} links past the acknowledged heads` : '';
    lines.push(`${r.kind === 'jetstream' ? 'JetStream tier' : 'collector store'} verified: ${r.records} records of ${sidecars} sidecars${chains}, every chain end to end${tier}`);
  }
  return lines.join('\n') + '\n';
}

/** One key change and what endorses it. */
function keyChangeLine(c: KeyChange): string {
  return `key change at epoch link ${c.batch} (epoch ${c.epoch}): ${c.from} -> ${c.to}, endorsed by ${c.endorsed === 'ca' ? `the mesh CA, as ${c.identity}` : `the previous key ${c.from}`}`;
}

/** The report for people: the inclusion proof if asked for, then one summary line. */
export function formatReport(r: VerifyReport): string {
  const lines: string[] = [];
  const p = r.inclusion;
  if (p !== undefined) {
    lines.push(`record ${p.seq}: leaf ${p.index} of ${p.tree_size} in batch ${p.batch}`, p.record, `leaf        ${p.leaf}`);
    for (const [i, node] of p.path.entries()) lines.push(`path ${String(i).padEnd(6)} ${node}`);
    lines.push(`root        ${p.root} (batch ${p.batch})`, `batch head  ${p.batch_head}`);
    if (r.ok) lines.push(`head        ${r.head} (batch ${r.last_batch}, seq ${r.last_seq}): batch ${p.batch}'s head chains to it`);
  }
  if (!r.ok) {
    const { seq, batch } = r.failure!;
    const where = seq !== undefined ? `record ${seq}` : batch !== undefined ? `batch ${batch}` : 'journal';
    lines.push(`verification FAILED at ${where}: ${r.failure!.problem}`);
    lines.push(`verified before it: ${r.records} records in ${r.batches} batches, up to batch ${r.last_batch} (seq ${r.last_seq})`);
    return lines.join('\n') + '\n';
  }
  const pruned = r.pruned_through === undefined ? '' : `, from seq ${r.first_seq} (batches up to ${r.pruned_through.batch} pruned)`;
  const proved = p === undefined ? '' : `; record ${p.seq} is included, proved against that head`;
  const signed = r.keys.length === 0 ? 'unsigned' : `signed by ${r.keys.join(', ')}`;
  for (const c of r.key_changes) lines.push(keyChangeLine(c));
  lines.push(`${r.records} records in ${r.batches} batches verified, head ${r.head} (seq ${r.last_seq}), ${signed}${pruned}; ${r.epochs} boot epochs, ${r.checkpoints} checkpoints${proved}`);
  return lines.join('\n') + '\n';
}
