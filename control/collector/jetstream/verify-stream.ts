import { chainKeyOf } from '../store/chain-key.js';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { nanos } from '@nats-io/transport-node';
import { keyIdOf, publicKeyFromSpki } from '../../../ledger/chain.js';
import { ChainBroken, fail, LinkVerifier, type ResolvedKey } from '../../../ledger/link-verifier.js';
import type { SidecarState } from '../collector-store.js';
import { previousKey } from '../ingest/key-rotation.js';
import { alteredRecord, storedRecords, type SidecarChainReport, type StoreReport } from '../store/verify-store.js';
import { decodeLinkMessage } from './link-message.js';
import { connectJetStream, type JetStreamConfig } from './nats-connect.js';
import { ALL_LINKS, CHAINS_BUCKET, STREAM } from './tier-layout.js';

/**
 * `auditmesh verify nats://…`: every chain of a collector tier, from the stream, through the same
 * link verifier ingest used, with the key pinned in the chains bucket, up to the head the bucket
 * holds (what sidecars were acknowledged for). Reads the stream once, in order, every chain at a
 * time. A link stored twice (a retried publish after the duplicate window) is counted, not a
 * failure; a second, different link of one batch is a fork. Links past the acknowledged head (a
 * replica died between its publish and its compare-and-set) must still verify; they are counted.
 */

export interface StreamReport extends Omit<StoreReport, 'kind'> {
  kind: 'jetstream';
  /** Links stored more than once, identical. */
  duplicates: number;
  /** Links published past the acknowledged heads. */
  unacknowledged: number;
  stream_messages: number;
}

/** Heads kept per chain to tell a repeated link from a fork. */
const HEADS_KEPT = 65_536;
const FETCH_MESSAGES = 1_000;

interface ChainCheck {
  state: SidecarState;
  report: SidecarChainReport;
  verifier: LinkVerifier;
  keyFor(keyId: string, batch: number): ResolvedKey;
  heads: Map<number, string>;
  failed: boolean;
}

export async function verifyJetStream(config: JetStreamConfig): Promise<StreamReport> {
  const nc = await connectJetStream(config, 'auditmesh-verify', false);
  try {
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const chains = await new Kvm(nc).open(CHAINS_BUCKET);
    const checks = new Map<string, ChainCheck>();
    for await (const key of await chains.keys()) {
      const e = await chains.get(key);
      if (e !== null && e.operation === 'PUT') {
        const state = e.json<SidecarState>();
        checks.set(chainKeyOf(state), startCheck(state));
      }
    }
    const report: StreamReport = { ok: true, kind: 'jetstream', sidecars: [], records: 0, duplicates: 0, unacknowledged: 0, stream_messages: 0 };
    const lastSeq = (await jsm.streams.info(STREAM)).state.last_seq;
    if (lastSeq > 0) {
      const info = await jsm.consumers.add(STREAM, { ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.All, filter_subject: ALL_LINKS, inactive_threshold: nanos(60_000) });
      const consumer = await js.consumers.get(STREAM, info.name);
      for (let seq = 0; seq < lastSeq; ) {
        const batch = await consumer.fetch({ max_messages: FETCH_MESSAGES, expires: 5_000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          seq = m.seq;
          report.stream_messages++;
          check(m, checks, report);
        }
        if (got === 0) break;
      }
      await jsm.consumers.delete(STREAM, info.name).catch(() => false);
    }
    for (const c of checks.values()) {
      if (!c.failed) finish(c, report);
      report.sidecars.push(c.report);
      report.records += c.report.records;
      if (!c.report.ok && report.failure === undefined) report.failure = { sidecar: c.report.id, ...c.report.failure! };
    }
    report.sidecars.sort((a, b) => (a.id < b.id ? -1 : 1));
    report.ok = report.failure === undefined;
    return report;
  } finally {
    await nc.close();
  }
}

function startCheck(state: SidecarState): ChainCheck {
  const start = { last_batch: state.first_batch - 1, last_seq: state.first_batch === 1 ? 0 : undefined, head: state.base_head, last_signed: state.first_batch - 1 };
  const report: SidecarChainReport = { id: state.id, incarnation: state.incarnation ?? null, chain: chainKeyOf(state), key_changes: [], key_id: state.key_id, ok: false, records: 0, links: 0, first_batch: state.first_batch, last_batch: start.last_batch, last_seq: start.last_seq ?? null, head: start.head, lost: state.lost ?? [] };
  const spki = Buffer.from(state.public_key, 'base64');
  const key = publicKeyFromSpki(spki);
  const c: ChainCheck = {
    state,
    report,
    heads: new Map(),
    failed: false,
    keyFor: (keyId, batch) => (keyId === state.key_id && key !== null ? { spki, key } : previousKey(state, keyId) ?? fail({ code: 'key-mismatch', batch, problem: `batch ${batch} names key ${keyId}, not the pinned key ${state.key_id}` })),
    verifier: undefined as unknown as LinkVerifier,
  };
  c.verifier = new LinkVerifier({ ...start, epoch_key: state.previous_keys?.[0]?.key_id ?? state.key_id }, { keyFor: c.keyFor });
  if (key === null || keyIdOf(spki) !== state.key_id) failCheck(c, { problem: `the pinned public key of sidecar ${state.id} is not an Ed25519 key with id ${state.key_id}: the key was swapped` });
  return c;
}

function failCheck(c: ChainCheck, failure: ChainBroken['failure']): void {
  c.failed = true;
  c.report.ok = false;
  c.report.failure = failure;
}

/** One stream message into its chain's check. */
function check(m: JsMsg, checks: Map<string, ChainCheck>, report: StreamReport): void {
  let decoded;
  try {
    decoded = decodeLinkMessage(m.data);
  } catch (err) {
    const id = `(stream message ${m.seq})`;
    const c = checks.get(id) ?? startCheck({ id, service: '', key_id: '', public_key: '', first_batch: 1, base_head: '', position: { last_batch: 0, last_seq: 0, head: '', last_signed: 0 }, first_seen_unix_ms: 0, last_seen_unix_ms: 0 });
    checks.set(id, c);
    return failCheck(c, { problem: `stream message ${m.seq} on ${m.subject} is unreadable: ${(err as Error).message}` });
  }
  const { sidecar, link, batch } = decoded;
  let c = checks.get(chainKeyOf(sidecar));
  if (c === undefined) {
    checks.set(chainKeyOf(sidecar), (c = startCheck(sidecar)));
    failCheck(c, { batch: link.batch, problem: `the stream holds links of sidecar ${sidecar.id}, but the chains bucket has no head for it: its acknowledged position is unknown` });
  }
  if (c.failed) return;
  try {
    const pos = c.verifier.position;
    if (link.batch <= pos.last_batch) {
      const had = c.heads.get(link.batch);
      if (had === link.head) return void report.duplicates++;
      if (had === undefined) fail({ batch: link.batch, problem: `batch ${link.batch} appears again at stream message ${m.seq}, far behind the chain's end (${pos.last_batch})` });
      fail({ code: 'fork', batch: link.batch, problem: `batch ${link.batch} is in the stream twice with different heads (${had}, then ${link.head} at stream message ${m.seq}): the chain forked` });
    }
    crossLost(c, link.batch);
    const bytes = link.kind === 'records' ? storedRecords(link, batch?.blob ?? Buffer.alloc(0)) : [];
    try {
      c.verifier.next(link, bytes);
    } catch (err) {
      if (err instanceof ChainBroken && err.failure.code === 'bad-root') alteredRecord(link, bytes);
      throw err;
    }
    c.heads.set(link.batch, link.head);
    if (c.heads.size > HEADS_KEPT) c.heads.delete(c.heads.keys().next().value!);
    c.report.links++;
    c.report.records += bytes.length;
    ({ last_batch: c.report.last_batch, head: c.report.head } = c.verifier.position);
    c.report.last_seq = c.verifier.position.last_seq ?? null;
  } catch (err) {
    if (!(err instanceof ChainBroken)) throw err;
    failCheck(c, err.failure);
  }
}

/** Across ranges recorded as lost, the chain starts again from the head the sidecar presented. */
function crossLost(c: ChainCheck, before: number): void {
  const lost = c.state.lost ?? [];
  for (let l = lost.find((x) => x.from_batch === c.verifier.position.last_batch + 1); l !== undefined && l.to_batch < before; l = lost.find((x) => x.from_batch === c.verifier.position.last_batch + 1)) {
    c.verifier = new LinkVerifier({ last_batch: l.to_batch, last_seq: undefined, head: l.base_head, last_signed: l.to_batch }, { keyFor: c.keyFor });
    ({ last_batch: c.report.last_batch, head: c.report.head } = c.verifier.position);
  }
}

/** The end of a chain: the acknowledged head must be in it, signed. */
function finish(c: ChainCheck, report: StreamReport): void {
  const { state, report: r } = c;
  try {
    crossLost(c, Number.MAX_SAFE_INTEGER);
    const pos = state.position;
    if (r.last_batch < pos.last_batch) {
      fail({ batch: r.last_batch + 1, problem: `sidecar ${state.id} was acknowledged through batch ${pos.last_batch}, but the stream holds its chain only through batch ${r.last_batch}: acknowledged links are missing` });
    }
    const head = pos.last_batch === r.last_batch ? r.head : c.heads.get(pos.last_batch);
    if (pos.last_batch >= state.first_batch && head !== pos.head) {
      fail({ batch: pos.last_batch, problem: `the acknowledged head of sidecar ${state.id} at batch ${pos.last_batch} (${pos.head}) is not the stream's (${head ?? 'not found'})` });
    }
    if (c.verifier.position.last_signed < pos.last_batch) fail({ batch: c.verifier.position.last_signed + 1, problem: `batches ${c.verifier.position.last_signed + 1}-${pos.last_batch} come after the last signed head` });
    report.unacknowledged += r.last_batch - pos.last_batch;
    for (const l of state.lost ?? []) {
      fail({ code: 'gap', batch: l.from_batch, problem: `batches ${l.from_batch}-${l.to_batch} of sidecar ${state.id} never reached the tier: at ${new Date(l.recorded_unix_ms).toISOString()} the sidecar no longer retained them and the tier had lost them. The chain verifies on both sides of them, but nothing shows what they held` });
    }
    r.ok = true;
  } catch (err) {
    if (!(err instanceof ChainBroken)) throw err;
    failCheck(c, err.failure);
  }
}
