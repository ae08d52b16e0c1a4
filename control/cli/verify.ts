import { existsSync, readFileSync } from 'node:fs';
import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { choice, flagsOf, optionalText, optionalWhole, readSettings } from '../../command/settings.js';
import { caBundleFrom } from '../../ledger/certified-key.js';
import { lmdbBuild, unpatchedRisk } from '../../ledger/lmdb-build.js';
import { withSnapshot } from '../../ledger/read-journal.js';
import { verifySnapshot, type VerifyOptions, type VerifyReport } from '../../ledger/verify-journal.js';
import { isCollectorStore, verifyStoreDir, type StoreReport } from '../collector/store/verify-store.js';
import type { CommandIO } from '../../command/io.js';
import { parseJetStreamUrls, type JetStreamConfig } from '../collector/jetstream/nats-connect.js';
import { verifyJetStream, type StreamReport } from '../collector/jetstream/verify-stream.js';

const HEX_HEAD = /^[0-9a-f]{64}$/;

const VERIFY_SETTINGS = {
  expectHead: optionalText({ name: 'expect-head', help: 'a head seen elsewhere (an earlier verify, a "journal checkpoint" log line): it must be in the chain', env: false }, (value) => {
    if (!HEX_HEAD.test(value)) throw new UsageError('--expect-head: expected 64 lowercase hex digits');
  }),
  expectKey: optionalText({ name: 'expect-key', help: 'key id every head must be signed with', env: false }),
  caFile: optionalText({ name: 'ca-file', help: 'the mesh CA bundle (PEM): a key change whose new key it certifies, for the same SPIFFE ID, is endorsed', env: false }),
  record: optionalWhole({ name: 'record', help: 'also print record SEQ, its Merkle inclusion path and the head it proves against, and check them', env: false }, 1, 'sequence numbers start at 1'),
  jetstreamCreds: optionalText({ name: 'jetstream-creds', help: 'with nats://…: NATS credentials file', env: false }),
  jetstreamCaFile: optionalText({ name: 'jetstream-ca-file', help: "with nats://…: CA bundle (PEM) the NATS servers' TLS certificates are checked against", env: false }),
  output: choice<'table' | 'json'>({ name: 'output', short: 'o', choices: ['table', 'json'], default: 'table', help: 'json: the result as one JSON object', env: false }),
};
const VERIFY_FLAGS: readonly FlagSpec[] = flagsOf(VERIFY_SETTINGS);

export const VERIFY_HELP = formatHelp(
  'auditmesh verify PATH [--expect-head HASH] [--expect-key ID] [--ca-file FILE] [--record SEQ] [-o json]',
  'Verifies a sidecar journal offline: every record, Merkle root, chain link and signature, and that\nsequence numbers run on without a hole. Every key change (a boot epoch with a new key) must be\nendorsed, by the previous key or (with --ca-file) by a mesh CA certificate of the new key; the\nprune mark must be signed by a key of the chain. Reads one consistent snapshot, so a journal being written\nmeanwhile is fine. PATH may also be a collector store (--store of `auditmesh collector`): then\nevery sidecar chain in it is verified end to end with the key the collector pinned (the --expect-*\nand --record flags are for journals); PATH nats://HOST:PORT[,nats://…] verifies a collector tier\non NATS JetStream the same way, from its stream. Exit 0 if everything verifies, 1 naming the first sidecar,\nbatch or record that does not.',
  VERIFY_FLAGS,
);

function parseVerifyArgs(argv: readonly string[], env: CommandIO['env']): { path: string; opts: VerifyOptions; json: boolean; jetstream?: JetStreamConfig } {
  const { values, positionals } = parseFlags(VERIFY_FLAGS, argv, env);
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'PATH (the journal folder) is required' : `unexpected argument ${JSON.stringify(positionals[1])}`);
  const { output, caFile, jetstreamCreds, jetstreamCaFile, ...opts } = readSettings(VERIFY_SETTINGS, values, env);
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
  return { path: positionals[0], opts: { ...opts, ca }, json: output === 'json' };
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
  if (await isCollectorStore(args.path).catch(() => false)) return verifyStoreMain(args, io);
  let report: VerifyReport;
  try {
    report = await withSnapshot(args.path, (snapshot) => verifySnapshot(snapshot, args.opts));
  } catch (err) {
    io.stderr.write(`auditmesh verify: cannot read a journal at ${args.path}: ${(err as Error).message}\n`);
    return 1;
  }
  io.stdout.write(args.json ? JSON.stringify(report) + '\n' : formatReport(report));
  return report.ok ? 0 : 1;
}

/** A JetStream tier: every chain from its stream, the same report as for a store. */
async function verifyTierMain(args: { path: string; opts: VerifyOptions; json: boolean }, config: JetStreamConfig, io: CommandIO): Promise<number> {
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

function journalOnlyFlagsAbsent(args: { path: string; opts: VerifyOptions }, what: string, io: CommandIO): boolean {
  const { expectHead, expectKey, record } = args.opts;
  if (expectHead === undefined && expectKey === undefined && record === undefined) return true;
  io.stderr.write(`auditmesh verify: ${args.path} is ${what}; --expect-head, --expect-key and --record apply to a sidecar journal\n`);
  return false;
}

async function verifyStoreMain(args: { path: string; opts: VerifyOptions; json: boolean }, io: CommandIO): Promise<number> {
  if (!journalOnlyFlagsAbsent(args, 'a collector store', io)) return 2;
  let report: StoreReport;
  try {
    report = await verifyStoreDir(args.path);
  } catch (err) {
    io.stderr.write(`auditmesh verify: cannot read the collector store at ${args.path}: ${(err as Error).message}\n`);
    return 1;
  }
  io.stdout.write(args.json ? JSON.stringify(report) + '\n' : formatStoreReport(report));
  return report.ok ? 0 : 1;
}

/** One line per sidecar chain, then the verdict naming the first failure. */
export function formatStoreReport(r: StoreReport | StreamReport): string {
  const lines = r.sidecars.map((s) => {
    const state = s.ok ? 'ok    ' : 'FAILED';
    return `${state} ${s.id.padEnd(24)} key ${s.key_id}  ${s.records} records in ${s.links} links, batches ${s.first_batch}-${s.last_batch}, seq ${s.last_seq ?? '-'}, head ${s.head}`;
  });
  if (r.failure !== undefined) {
    const { sidecar, seq, batch, problem } = r.failure;
    const where = seq !== undefined ? `record ${seq}` : batch !== undefined ? `batch ${batch}` : 'its chain';
    lines.push(`verification FAILED: sidecar ${sidecar}, ${where}: ${problem}`);
  } else {
    const tier = r.kind === 'jetstream' ? `; ${r.stream_messages} stream messages, ${r.duplicates} stored twice, ${r.unacknowledged} links past the acknowledged heads` : '';
    lines.push(`${r.kind === 'jetstream' ? 'JetStream tier' : 'collector store'} verified: ${r.records} records of ${r.sidecars.length} sidecars, every chain end to end${tier}`);
  }
  return lines.join('\n') + '\n';
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
  for (const c of r.key_changes) lines.push(`key change at epoch link ${c.batch} (epoch ${c.epoch}): ${c.from} -> ${c.to}, endorsed by ${c.endorsed === 'ca' ? `the mesh CA, as ${c.identity}` : `the previous key ${c.from}`}`);
  lines.push(`${r.records} records in ${r.batches} batches verified, head ${r.head} (seq ${r.last_seq}), ${signed}${pruned}; ${r.epochs} boot epochs, ${r.checkpoints} checkpoints${proved}`);
  return lines.join('\n') + '\n';
}
