import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import * as lmdb from 'lmdb';
import { open } from 'lmdb';
import { BatchBlob, encodeBatchBlob } from '../control/collector/store/batch-blob.js';
import type { SidecarState, StoredLink } from '../control/collector/collector-store.js';
import { batchEntries, encodeBatch, encodeLinks } from '../control/collector/store/encoded-batch.js';
import { idHash, readIdEntries, type IdKind } from '../control/collector/store/id-index.js';
import { openLmdbStore } from '../control/collector/store/lmdb-store.js';
import { openCollectorStores } from '../control/collector/store/store-layout.js';
import { indexRecord } from '../control/collector/store/record-index.js';
import { matchesQuery, parseRecordQuery, QueryError, runQuery, type CollectedRecord } from '../control/collector/api/record-query.js';
import { verifyStoreDir } from '../control/collector/store/verify-store.js';
import { GENESIS_HEAD } from '../ledger/chain.js';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { toEarlierIdLayout, toUncompressedBatches } from './helpers/collector.js';
import { tempDir } from './helpers/sidecar.js';

// The collector store keeps one value per batch and per-batch time and service entries, so time
// and service queries merge batches. These checks answer every query two ways, from the store and
// by sorting and filtering every record appended, on real LMDB files: overlapping batches from
// two sidecars, a batch holding one long exchange that started long before its neighbours,
// errors, and since/until bounds that cut batches in two.

const T0 = 1_700_000_000_000;
const BATCH = 16;

interface Planned {
  sidecar: string;
  service: string;
  seq: number;
  start: number;
  peer: string;
  status: number;
  requestId: string;
}

function recordBytes(p: Planned): Buffer {
  return Buffer.from(JSON.stringify({ 'audit.kind': 'http', 'audit.direction': 'outbound', 'audit.service': p.service, 'peer.service': p.peer, 'audit.start_unix_ms': p.start, 'http.response.status_code': p.status, 'audit.request_id': p.requestId, 'trace.id': `trace-${p.requestId}` }));
}

/** Two sidecars, 10 batches each, their records' start times interleaved; one record in each sidecar's batch 4 started 60 s before everything else. */
function plan(): Planned[] {
  const all: Planned[] = [];
  for (const [n, sidecar] of ['pod-a', 'pod-b'].entries()) {
    for (let seq = 1; seq <= 10 * BATCH; seq++) {
      const longOne = seq === 3 * BATCH + 5;
      all.push({
        sidecar,
        service: n === 0 ? 'checkout' : 'payments',
        seq,
        start: longOne ? T0 - 60_000 : T0 + seq * 10 + n * 5 + (seq % 3) * 7,
        peer: seq % 4 === 0 ? 'inventory' : n === 0 ? 'payments' : 'checkout',
        status: seq % 9 === 0 ? 503 : 200,
        requestId: `req-${seq % 40}`,
      });
    }
  }
  return all;
}

const ORDERS = 'spiffe://cluster.local/ns/shop/sa/orders';
const CHECKOUT = 'spiffe://cluster.local/ns/shop/sa/checkout';
/** The identity pod-a's stream proved: one for its first append, another after; pod-b proves none (a shared token). */
const identityOf = (p: Pick<Planned, 'sidecar' | 'seq'>): string | undefined => (p.sidecar !== 'pod-a' ? undefined : p.seq <= 4 * BATCH ? ORDERS : CHECKOUT);

/** A sidecar's state as first contact stores it, with a real pinned key. */
function sidecarState(id: string): SidecarState {
  const key = ephemeralSigningKey();
  return { id, service: id, key_id: key.keyId, public_key: Buffer.from(key.publicKeySpki).toString('base64'), first_batch: 1, base_head: GENESIS_HEAD, position: { last_batch: 0, last_seq: 0, head: GENESIS_HEAD, last_signed: 0 }, first_seen_unix_ms: T0, last_seen_unix_ms: T0 };
}

async function filledStore(dir: string, planned: Planned[]): Promise<void> {
  const store = openLmdbStore(dir);
  const states = new Map(['pod-a', 'pod-b'].map((id) => [id, sidecarState(id)]));
  for (const sidecar of ['pod-a', 'pod-b']) {
    const mine = planned.filter((p) => p.sidecar === sidecar);
    for (let from = 0; from < mine.length; from += 4 * BATCH) {
      const records = mine.slice(from, from + 4 * BATCH).map((p) => {
        const bytes = recordBytes(p);
        return { seq: p.seq, bytes, index: indexRecord(bytes) };
      });
      const links: StoredLink[] = [];
      for (let at = 0; at < records.length; at += BATCH) {
        links.push({ batch: (records[at].seq - 1) / BATCH + 1, first_seq: records[at].seq, count: Math.min(BATCH, records.length - at), kind: 'records', root: '', sealed_unix_ms: 0, epoch: 1, head: '' });
      }
      const identity = identityOf(mine[from]);
      const batches = encodeLinks(sidecar, links, records).map((b) => (identity === undefined ? b : { ...b, identity }));
      await store.append({ sidecar: states.get(sidecar)!, links, batches });
    }
  }
  await store.close();
}

/** A query answered by the store in `dir` (opened for it), or by a store already open. */
async function answer(from: string | ReturnType<typeof openLmdbStore>, params: string): Promise<string[]> {
  const store = typeof from === 'string' ? openLmdbStore(from) : from;
  try {
    const out: string[] = [];
    for await (const rec of runQuery(store, parseRecordQuery(new URLSearchParams(params), T0))) out.push(`${rec['audit.sidecar_id']}/${rec['audit.seq']}`);
    return out;
  } finally {
    if (store !== from) await store.close();
  }
}

/** The same query answered by brute force: every record, filtered in full, newest first (ties: sidecar, then seq, descending). */
function expected(planned: Planned[], params: string): string[] {
  const q = parseRecordQuery(new URLSearchParams(params), T0);
  return planned
    .filter((p) => matchesQuery({ ...(JSON.parse(recordBytes(p).toString()) as CollectedRecord), 'audit.seq': p.seq, ...(identityOf(p) === undefined ? {} : { 'audit.identity': identityOf(p) }) }, q))
    .sort((a, b) => b.start - a.start || (a.sidecar < b.sidecar ? 1 : a.sidecar > b.sidecar ? -1 : b.seq - a.seq))
    .slice(0, q.limit)
    .map((p) => `${p.sidecar}/${p.seq}`);
}

test('collector store: time, service, identity, id and error queries over batches answer exactly what a full sort and filter does', async (t) => {
  const dir = join(await tempDir(t), 'store');
  const planned = plan();
  await filledStore(dir, planned);
  const queries = [
    'limit=10000',
    'limit=7',
    'service=inventory&limit=10000',
    'service=checkout&peer=payments&limit=10000',
    'peer=payments&limit=25',
    `since=${T0 + 400}&until=${T0 + 900}&limit=10000`,
    `until=${T0 - 1}&limit=10000`,
    `service=payments&since=${T0 + 1000}&limit=10000`,
    'status=error&limit=10000',
    'status=5xx&service=checkout&limit=10000',
    'correlation_id=req-5&limit=10000',
    'trace_id=trace-req-7&limit=10000',
    `correlation_id=req-5&until=${T0 + 600}&limit=10000`,
    `identity=${ORDERS}&limit=10000`,
    `identity=${CHECKOUT}&limit=7`,
    `identity=${CHECKOUT}&since=${T0 + 600}&until=${T0 + 900}&limit=10000`,
    `identity=${ORDERS}&status=error&limit=10000`,
    `identity=${ORDERS}&service=inventory&limit=10000`,
  ];
  for (const params of queries) {
    const want = expected(planned, params);
    t.true(want.length > 0, `${params}: the plan has records for it`);
    t.deepEqual(await answer(dir, params), want, params);
  }
});

test('collector store: verify names a batch whose stored records were cut short', async (t) => {
  const dir = join(await tempDir(t), 'store');
  await filledStore(dir, plan());
  const stores = openCollectorStores(open({ path: dir }));
  const value = stores.batches.get(['pod-b', 1])!;
  const blob = new BatchBlob(value);
  t.is(blob.count, BATCH);
  // Rewrite batch 1 of pod-b without its last record, as someone with write access to the files could.
  const fewer = encodeBatchBlob(blob.firstSeq, blob.all().slice(0, -1).map((bytes, i) => ({ bytes, start: blob.start(i) })));
  stores.batches.putSync(['pod-b', 1], fewer);
  await stores.env.close();
  // The links carry no chain here (the store is filled directly), so batch 1 is checked for its count before its root.
  const report = await verifyStoreDir(dir);
  const b = report.sidecars.find((s) => s.id === 'pod-b')!;
  t.false(b.ok);
  t.regex(b.failure?.problem ?? '', /batch 1 covers seqs 1-16 \(16 records\), but 15 are stored for it, from seq 1: records were removed or added/);
});

/** The development layouts before 0.1.0, each made from a store of today's layout. */
const EARLIER_LAYOUTS: ReadonlyArray<{ layout: string; db: string; make: (env: lmdb.RootDatabase) => void }> = [
  { layout: 'one value per record', db: 'records', make: (env) => env.openDB('records', { encoding: 'binary' }).putSync(['pod-a', 1], Buffer.from('{}')) },
  { layout: 'uncompressed batch values', db: 'batches', make: (env) => void toUncompressedBatches(env) },
  { layout: 'per-record id B-trees', db: 'by_correlation', make: toEarlierIdLayout },
];

for (const { layout, db, make } of EARLIER_LAYOUTS) {
  test(`collector store: a store of a layout from before 0.1.0 (${layout}) is refused by the store and by verify, named, and left as it is`, async (t) => {
    const dir = join(await tempDir(t), 'store');
    await filledStore(dir, plan());
    const env = open({ path: dir, maxDbs: 32 });
    make(env);
    const before = Array.from(env.getKeys(), String).sort();
    await env.close();
    const message = `${dir} is a collector store in a layout from before auditmesh 0.1.0 (${layout}, database "${db}"), which no release reads: it is left as it is; start the collector on an empty --store directory`;
    t.throws(() => openLmdbStore(dir), { message });
    await t.throwsAsync(verifyStoreDir(dir), { message });
    const after = open({ path: dir, readOnly: true });
    t.teardown(() => after.close());
    t.deepEqual(Array.from(after.getKeys(), String).sort(), before);
  });
}

// Exported by lmdb-js (ordered-binary's toBufferKey and fromBufferKey), missing from its type declarations.
const { keyValueToBuffer, bufferToKeyValue } = lmdb as unknown as { keyValueToBuffer(key: unknown): Buffer; bufferToKeyValue(key: Buffer): unknown };

test('collector store: a batch encoded for the store carries the index keys lmdb-js itself writes, and its exchanges grouped', (t) => {
  const records = plan()
    .filter((p) => p.sidecar === 'pod-a')
    .slice(0, BATCH)
    .map((p) => ({ p, bytes: recordBytes(p) }));
  // A record that is not JSON is stored, unindexed; one with a multi-byte request id is indexed by it.
  const odd = [Buffer.from('not json'), Buffer.from(JSON.stringify({ 'audit.service': 'checkout', 'audit.start_unix_ms': T0, 'audit.request_id': 'zähler-✓', 'audit.direction': 'outbound', 'audit.phase': 'final' }))];
  const b = encodeBatch('pod-a', 7, 97, [...records.map(({ bytes }) => ({ bytes, index: indexRecord(bytes) })), ...odd.map((bytes) => ({ bytes, index: indexRecord(bytes) }))]);
  t.like(b, { batch: 7, firstSeq: 97, count: BATCH + 2 });
  const entries = batchEntries(b).map(({ db, key }) => ({ db, key: bufferToKeyValue(key) as unknown[], bytes: key }));
  // Byte for byte what lmdb-js encodes for the same array (its own export of ordered-binary).
  for (const e of entries) t.is(e.bytes.toString('hex'), Buffer.from(keyValueToBuffer(e.key)).toString('hex'), JSON.stringify(e.key));
  const max = Math.max(...records.map(({ p }) => p.start), T0);
  // Per record, its request id's entry and its trace id's, for the id index (sidecar number set by the store).
  const idEntry = (kind: IdKind, id: string, start: number, i: number): object => {
    const [hi, lo] = idHash(kind, id);
    return { hi, lo, start, batch: 7, sidecar: 0, i };
  };
  t.deepEqual(readIdEntries(b.ids), [
    ...records.flatMap(({ p }, i) => [idEntry('correlation', p.requestId, p.start, i), idEntry('trace', `trace-${p.requestId}`, p.start, i)]),
    idEntry('correlation', 'zähler-✓', T0, BATCH + 1),
  ]);
  t.notDeepEqual(idHash('correlation', 'x'), idHash('trace', 'x'), 'a request id and a trace id that are the same string are told apart');
  t.deepEqual(entries.filter((e) => e.db === 'errors').map((e) => e.key), records.flatMap(({ p }, i) => (p.status >= 500 ? [[p.start, 'pod-a', 7, i]] : [])));
  t.deepEqual(entries.filter((e) => e.db === 'byTime').map((e) => e.key), [[max, 'pod-a', 7]]);
  t.deepEqual(entries.filter((e) => e.db === 'byService').map((e) => e.key[0]).sort(), ['checkout', 'inventory', 'payments']);
  t.is(b.span, max - Math.min(...records.map(({ p }) => p.start), T0));
  t.deepEqual(new BatchBlob(b.blob).all(), [...records.map(({ bytes }) => bytes), ...odd]);
  // Only records with audit.phase final are exchanges: the one odd record here.
  t.deepEqual(b.exchanges.map((g) => ({ ...g, ends: Array.from(g.ends) })), [{ peer: undefined, direction: 'outbound', method: undefined, failed: false, ends: [T0] }]);
});

/** 2 sidecars x 48 batches of 64 records, 2 id entries each; one request id in 4 records (1,536 entries) spans several 512-entry blocks. */
function idPlan(): Planned[] {
  const planned: Planned[] = [];
  for (const [n, sidecar] of ['pod-a', 'pod-b'].entries()) {
    for (let seq = 1; seq <= 48 * 64; seq++) {
      const requestId = seq % 4 === 0 ? 'req-hot' : `req-${sidecar}-${seq}-${(seq * 2654435761) % 1e9}`;
      planned.push({ sidecar, service: n === 0 ? 'checkout' : 'payments', seq, start: T0 + seq * 3 + n, peer: 'inventory', status: 200, requestId });
    }
  }
  return planned;
}

/**
 * Appends the planned records with seq in (from, to], 4 batches of 64 a run, the two sidecars'
 * runs at once (as their streams arrive), so writes overlap: a seal's buffer must outlive its write.
 */
async function appendPlanned(store: ReturnType<typeof openLmdbStore>, planned: Planned[], from: number, to: number): Promise<void> {
  await Promise.all(['pod-a', 'pod-b'].map(async (sidecar) => {
    const state = sidecarState(sidecar);
    const mine = planned.filter((p) => p.sidecar === sidecar && p.seq > from && p.seq <= to);
    for (let at = 0; at < mine.length; at += 4 * 64) {
      const records = mine.slice(at, at + 4 * 64).map((p) => ({ seq: p.seq, bytes: recordBytes(p) }));
      const links: StoredLink[] = [];
      for (let k = 0; k < records.length; k += 64) links.push({ batch: (records[k].seq - 1) / 64 + 1, first_seq: records[k].seq, count: 64, kind: 'records', root: '', sealed_unix_ms: 0, epoch: 1, head: '' });
      await store.append({ sidecar: state, links, batches: encodeLinks(sidecar, links, records.map(({ bytes }) => ({ bytes, index: indexRecord(bytes) }))) });
    }
  }));
}

/** Every id query of the plan answered by the store and by brute force. */
async function checkIdQueries(t: ExecutionContext, dir: string | ReturnType<typeof openLmdbStore>, planned: Planned[]): Promise<void> {
  const some = [planned[5], planned[700], planned[planned.length - 3], planned[3100]];
  const queries = [
    'correlation_id=req-hot&limit=10000',
    `correlation_id=req-hot&since=${T0 + 3000}&until=${T0 + 6000}&limit=10000`,
    'correlation_id=req-hot&limit=10',
    ...some.flatMap((p) => [`correlation_id=${p.requestId}&limit=100`, `trace_id=trace-${p.requestId}&limit=100`]),
  ];
  for (const params of queries) {
    const want = expected(planned, params);
    t.true(want.length > 0, `${params}: the plan has records for it`);
    t.deepEqual(await answer(dir, params), want, params);
  }
  t.deepEqual(await answer(dir, 'correlation_id=req-nobody&limit=100'), []);
}

/** Entries in the log, and per level the entries of its segments. */
function idIndexShape(store: ReturnType<typeof openLmdbStore>): { logged: number; levels: number[][] } {
  const levels: number[][] = [];
  for (const { value } of store.ids.segments.getRange()) (levels[value.level ?? 0] ??= []).push(value.entries);
  return { logged: Array.from(store.ids.log.getRange(), ({ value }) => value.length / 32).reduce((a, b) => a + b, 0), levels };
}

test('collector store: the id index answers from its log and from sorted segments alike, across reopening, with one id spread over many blocks', async (t) => {
  const dir = join(await tempDir(t), 'store');
  const planned = idPlan();
  // Seals every 9 batches (1,152 entries): 10 segments and some left in the log; 8 of them merged once.
  const sealEntries = 1100;
  const first = openLmdbStore(dir, { sealEntries });
  await appendPlanned(first, planned, 0, 24 * 64);
  await first.close();
  const second = openLmdbStore(dir, { sealEntries });
  await appendPlanned(second, planned, 24 * 64, 48 * 64);
  await second.indexMerged();
  const { logged, levels } = idIndexShape(second);
  // Every entry is in the log or in exactly one segment; the log holds less than a segment and one write.
  t.is(levels.flat().reduce((a, b) => a + b, 0) + logged, planned.length * 2);
  t.deepEqual([0, 1, 2].map((l) => levels[l]?.length ?? 0), [2, 1, 0]);
  t.true(logged > 0 && logged < sealEntries + 4 * 64 * 2, `${logged} entries in the log`);
  // Answered by the store that wrote it (the log as its writer holds it), then reopened (as stored).
  await checkIdQueries(t, second, planned);
  await second.close();
  await checkIdQueries(t, dir, planned);
});

/** A store holding all of idPlan(), its merges done. */
async function idPlanStore(t: ExecutionContext, sealEntries: number): Promise<{ dir: string; planned: Planned[]; store: ReturnType<typeof openLmdbStore> }> {
  const dir = join(await tempDir(t), 'store');
  const planned = idPlan();
  const store = openLmdbStore(dir, { sealEntries });
  await appendPlanned(store, planned, 0, 48 * 64);
  await store.indexMerged();
  return { dir, planned, store };
}

test('collector store: id index segments are merged level by level, and a merge cut short is dropped when the store opens', async (t) => {
  // A seal every batch (128 entries): 96 segments, merged 8 at a time into 12, and 8 of those into one.
  const { dir, planned, store } = await idPlanStore(t, 64);
  const { logged, levels } = idIndexShape(store);
  t.is(logged, 0);
  t.deepEqual([0, 1, 2, 3].map((l) => levels[l]?.length ?? 0), [0, 4, 1, 0]);
  t.deepEqual(levels[2], [8 * 8 * 128]);
  t.is(levels.flat().reduce((a, b) => a + b, 0), planned.length * 2);
  // A merge the process did not finish: a segment marked merging, some of its blocks written.
  const segments = Array.from(store.ids.segments.getKeys());
  const unfinished = Math.max(...segments) + 1;
  await store.ids.segments.put(unfinished, { entries: 0, level: 3, merging: true });
  const [someBlock] = store.ids.blocks.getRange({ limit: 1 });
  await store.ids.blocks.put([unfinished, someBlock.key[1], 0], someBlock.value);
  await store.close();
  await checkIdQueries(t, dir, planned);
  const reopened = openLmdbStore(dir);
  t.deepEqual(Array.from(reopened.ids.segments.getKeys()), segments);
  t.is(Array.from(reopened.ids.blocks.getKeys({ start: [unfinished], end: [unfinished + 1] })).length, 0);
  await reopened.close();
});

test('collector store: an id too many records carry is refused with a clear error, and answered once since and until narrow it', async (t) => {
  const { dir, planned, store: filled } = await idPlanStore(t, 1100);
  await filled.close();
  // req-hot: 1,536 records; at most 1,000 gathered.
  const store = openLmdbStore(dir, { maxIdMatches: 1000 });
  const run = async (params: string): Promise<string[]> => {
    const out: string[] = [];
    for await (const rec of runQuery(store, parseRecordQuery(new URLSearchParams(params), T0))) out.push(`${rec['audit.sidecar_id']}/${rec['audit.seq']}`);
    return out;
  };
  await t.throwsAsync(run('correlation_id=req-hot&limit=10'), { instanceOf: QueryError, message: 'correlation_id "req-hot": more than 1,000 records carry it; narrow it with since and until' });
  const narrowed = `correlation_id=req-hot&since=${T0}&until=${T0 + 3000}&limit=10000`;
  const want = expected(planned, narrowed);
  t.true(want.length > 100 && want.length <= 1000, `${want.length} records in the window`);
  t.deepEqual(await run(narrowed), want);
  await store.close();
});

test('collector store: an id stays found while the write that seals its entries has not committed', async (t) => {
  const dir = join(await tempDir(t), 'store');
  const planned = idPlan().filter((p) => p.sidecar === 'pod-a');
  // Runs of 4 batches, 128 entries each: the second run's first batch seals the first run's 512 entries with its own.
  const store = openLmdbStore(dir, { sealEntries: 600 });
  const state = sidecarState('pod-a');
  const run = (from: number): Parameters<typeof store.append>[0] => {
    const records = planned.slice(from, from + 4 * 64).map((p) => ({ seq: p.seq, bytes: recordBytes(p) }));
    const links: StoredLink[] = [0, 1, 2, 3].map((k) => ({ batch: from / 64 + k + 1, first_seq: from + k * 64 + 1, count: 64, kind: 'records', root: '', sealed_unix_ms: 0, epoch: 1, head: '' }));
    return { sidecar: state, links, batches: encodeLinks('pod-a', links, records.map(({ bytes }) => ({ bytes, index: indexRecord(bytes) }))) };
  };
  await store.append(run(0));
  const sealing = store.append(run(4 * 64));
  // The first run is committed: its ids must be found whether or not the seal has committed yet.
  const first = planned[10];
  t.deepEqual(await answer(store, `correlation_id=${first.requestId}&limit=10`), [`pod-a/${first.seq}`]);
  await sealing;
  t.deepEqual(idIndexShape(store).levels[0], [640]);
  t.deepEqual(await answer(store, `correlation_id=${first.requestId}&limit=10`), [`pod-a/${first.seq}`]);
  await store.close();
});
