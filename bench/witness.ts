// Witness benchmark (issue 27): proofs generated per second out of a collector store, and the
// size of evidence bundles against the number of records they prove, on a store of real signed
// chains; baselines in the same run: reading the same record as /v1/records does (proofs), the
// records' own bytes (bundles).
//
//   npm run bench:witness     knobs: STREAMS=4 (sidecars) RECORDS=250000 (per sidecar) BATCH=256 (records a batch)
//                             SEGMENT=8 (batches a signed commit) PROOFS=2000 (records proved, at random)
//                             SIZES=1,10,100,1000,10000 (records in a bundle, at random)
// The store is built directly (the collector's own store append, as ingest's workers encode it):
// what a proof costs does not depend on how the records arrived. The witness log is then built
// from the store as a collector does at its first start (catch-up), and timed.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { GENESIS_HEAD } from '../ledger/chain.js';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { recordsRoot } from '../ledger/link-verifier.js';
import { verifyBundle } from '../ledger/evidence-bundle.js';
import { planCommit } from '../proxy/journal/plan-commit.js';
import { openLmdbStore } from '../control/collector/store/lmdb-store.js';
import { encodeLinks } from '../control/collector/store/encoded-batch.js';
import { indexRecord } from '../control/collector/store/record-index.js';
import { BatchBlob } from '../control/collector/store/batch-blob.js';
import type { SidecarState, StoredLink } from '../control/collector/collector-store.js';
import { WitnessLog } from '../control/collector/witness/witness-log.js';
import { buildBundle, type RecordRef } from '../control/collector/witness/bundle-builder.js';
import { formatTable } from './table.js';

const STREAMS = Number(process.env.STREAMS ?? 4);
const RECORDS = Number(process.env.RECORDS ?? 250_000);
const BATCH = Number(process.env.BATCH ?? 256);
const SEGMENT = Number(process.env.SEGMENT ?? 8);
const PROOFS = Number(process.env.PROOFS ?? 2000);
const SIZES = (process.env.SIZES ?? '1,10,100,1000,10000').split(',').map(Number);

/** A record as a sidecar writes it, about 700 bytes of canonical JSON with random ids (as bench/ingest.ts). */
function record(stream: number, i: number, t0: number): Buffer {
  const g = createHash('sha256').update(`${stream}/${i}`).digest('hex');
  return Buffer.from(
    JSON.stringify({
      'audit.kind': 'http',
      'audit.phase': 'final',
      'audit.direction': i % 2 === 0 ? 'inbound' : 'outbound',
      'audit.service': `svc-${stream}`,
      'peer.service': `svc-${(stream + 1) % STREAMS}`,
      'audit.start_unix_ms': t0 + i,
      'audit.duration_ms': 3.2,
      'client.address': '10.0.3.17',
      'server.address': '10.0.5.2',
      'server.port': 8080,
      'http.request.method': 'GET',
      'url.path': `/api/items/${i}`,
      'http.response.status_code': 200,
      'http.request.header': { accept: 'application/json', authorization: 'hmac-sha256:9f2c4e0d8a7b6c5d4e3f2a1b0c9d8e7f' },
      'trace.id': g.slice(0, 32),
      'span.id': g.slice(32, 48),
      'audit.request_id': `${g.slice(48, 56)}-${g.slice(56, 60)}-4${g.slice(1, 4)}-a${g.slice(4, 7)}-${g.slice(7, 19)}`,
    }),
  );
}

/** One sidecar's chain, commit by commit (real heads, real signatures), appended to the store. */
async function buildSidecar(store: ReturnType<typeof openLmdbStore>, s: number): Promise<number> {
  const signer = ephemeralSigningKey();
  const id = `bench/pod-${s}`;
  const t0 = Date.now() - 3_600_000;
  let head = { last_seq: 0, last_batch: 0, head: GENESIS_HEAD, epoch: 1 };
  const state: SidecarState = { id, service: `svc-${s}`, key_id: signer.keyId, public_key: signer.publicKeySpki.toString('base64'), first_batch: 1, base_head: GENESIS_HEAD, position: { last_batch: 0, last_seq: 0, head: GENESIS_HEAD, last_signed: 0 }, first_seen_unix_ms: t0, last_seen_unix_ms: t0 };
  let bytes = 0;
  for (let from = 0, first = true; from < RECORDS; first = false) {
    const batches: Buffer[][] = [];
    for (let b = 0; b < SEGMENT && from < RECORDS; b++, from += BATCH) batches.push(Array.from({ length: Math.min(BATCH, RECORDS - from) }, (_, i) => record(s, from + i, t0)));
    const hashed = batches.map((r) => recordsRoot(r));
    const plan = planCommit({ head, epoch: 1, openEpoch: first, sealed: batches.map((r, i) => ({ count: r.length, root: hashed[i].root, sealedUnixMs: t0 })), nowUnixMs: t0, signer });
    let k = 0;
    const links: StoredLink[] = plan.headers.map((h) => (h.kind === 'records' ? { ...h, leaves: Buffer.concat(hashed[k++].leaves) } : h));
    const flat = batches.flat();
    bytes += flat.reduce((n, b) => n + b.length, 0);
    const records = flat.map((b, i) => ({ seq: head.last_seq + i + 1, bytes: b, index: indexRecord(b) }));
    head = plan.head;
    const last = plan.headers[plan.headers.length - 1];
    state.position = { last_batch: head.last_batch, last_seq: head.last_seq, head: head.head, last_signed: last.batch, epoch: 1, epoch_key: signer.keyId };
    await store.append({ sidecar: { ...state }, links, batches: encodeLinks(id, links, records) });
  }
  return bytes;
}

function pick<T>(items: readonly T[], n: number): T[] {
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(items[Math.floor(Math.random() * items.length)]);
  return out;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-witness-'));
  try {
    const store = openLmdbStore(join(dir, 'store'));
    let started = performance.now();
    const recordBytes = (await Promise.all(Array.from({ length: STREAMS }, (_, s) => buildSidecar(store, s)))).reduce((a, b) => a + b, 0);
    const buildS = (performance.now() - started) / 1000;
    const total = STREAMS * RECORDS;
    const key = ephemeralSigningKey();
    const log = new WitnessLog(store.stores.env, { keyId: key.keyId, publicKeySpki: key.publicKeySpki, chainPem: undefined, sign: (b) => key.sign(b) });
    started = performance.now();
    const entries = await log.catchUp(store, (id, from, to, limit) => Array.from(store.stores.links.getRange({ start: [id, from], end: [id, to + 1], limit }), ({ value }) => value));
    const catchUpS = (performance.now() - started) / 1000;
    const latest = await log.checkpoint();
    const src = { stores: store.stores, witness: log.dbs, latest };
    const refs: RecordRef[] = Array.from({ length: total }, (_, i) => ({ sidecar: `bench/pod-${i % STREAMS}`, seq: Math.floor(i / STREAMS) + 1 }));

    // Proofs per second, one record each (what GET /v1/proof does), and the plain read of the same records.
    const sample = pick(refs, PROOFS);
    started = performance.now();
    for (const ref of sample) {
      void store.stores.sidecars.get(ref.sidecar);
      const l = Array.from(store.stores.links.getRange({ start: [ref.sidecar, Math.max(1, Math.floor((ref.seq - 1) / BATCH))], end: [ref.sidecar, Number.MAX_SAFE_INTEGER], limit: 3 }), ({ value }) => value).find((x) => x.kind === 'records' && ref.seq >= x.first_seq && ref.seq < x.first_seq + x.count)!;
      new BatchBlob(store.stores.batches.get([ref.sidecar, l.batch])!).bytes(ref.seq - l.first_seq);
    }
    const readS = (performance.now() - started) / 1000;
    const bundles = [];
    started = performance.now();
    for (const ref of sample) bundles.push(buildBundle(src, [ref]));
    const proofS = (performance.now() - started) / 1000;
    started = performance.now();
    let ok = 0;
    for (const b of bundles) if (verifyBundle(b).ok) ok++;
    const verifyS = (performance.now() - started) / 1000;
    if (ok !== bundles.length) throw new Error(`${bundles.length - ok} one-record bundles did not verify`);
    const proofBytes = bundles.reduce((n, b) => n + JSON.stringify(b).length, 0) / bundles.length;

    console.log(`store: ${STREAMS} sidecars x ${RECORDS} records (${total} records, ${(recordBytes / 2 ** 20).toFixed(0)} MiB of records), batches of ${BATCH}, ${SEGMENT} batches a signed commit; built in ${buildS.toFixed(1)} s`);
    console.log(`witness log: ${entries} entries logged from the store in ${catchUpS.toFixed(2)} s (${Math.round(entries / catchUpS)} entries/s); tree head of size ${latest.tree_size}`);
    console.log(
      formatTable(
        ['per record, one at a time', 'per second', 'µs each', 'vs the plain read'],
        [
          ['plain read (as /v1/records: link, batch value, record bytes)', String(Math.round(PROOFS / readS)), ((readS / PROOFS) * 1e6).toFixed(0), '1.00'],
          ['proof (one-record bundle, as /v1/proof)', String(Math.round(PROOFS / proofS)), ((proofS / PROOFS) * 1e6).toFixed(0), (proofS / readS).toFixed(1)],
          ['verify of that bundle, offline', String(Math.round(PROOFS / verifyS)), ((verifyS / PROOFS) * 1e6).toFixed(0), (verifyS / readS).toFixed(1)],
        ],
      ),
    );
    console.log(`one-record bundle: ${Math.round(proofBytes)} bytes on average`);
    const rows: string[][] = [];
    for (const n of SIZES.filter((k) => k <= total)) {
      const chosen = [...new Map(pick(refs, n).map((r) => [`${r.sidecar}:${r.seq}`, r])).values()];
      started = performance.now();
      const b = buildBundle(src, chosen);
      const ms = performance.now() - started;
      const size = JSON.stringify(b).length;
      const raw = b.records.reduce((k, r) => k + Buffer.from(r.bytes, 'base64').length, 0);
      rows.push([String(b.records.length), String(size), String(Math.round(size / b.records.length)), String(raw), (size / raw).toFixed(2), ms.toFixed(0)]);
    }
    console.log(formatTable(['records (random)', 'bundle bytes', 'bytes/record', "records' own bytes", 'ratio', 'ms to build'], rows));
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
