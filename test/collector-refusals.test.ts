import test from 'ava';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import type { RefusalCode, Segment, WireLink } from '../wire/sync-wire.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import { journalShipment, openSync, signedHello, startTestCollector, type JournalShipment, type TestCollector } from './helpers/collector.js';
import { helloSigningInput } from '../ledger/chain.js';
import { makeRecord, writeJournal } from './helpers/journal.js';
import { metricValue, tempDir, until } from './helpers/sidecar.js';
import { eventually } from './helpers/shipping.js';

// Each case sends a valid first segment, then something wrong, straight to the collector from a
// real gRPC client; it must be refused with the right code, counted, kept as evidence, and
// nothing of it stored; the collector keeps serving other streams.

async function shipment(t: ExecutionContext, key: SigningKey, sidecarId = 'pod-a', path = '/items'): Promise<JournalShipment> {
  const journalDir = join(await tempDir(t), 'journal');
  await writeJournal({ journalDir, maxBatchRecords: 3, signingKey: key }, 3, 8, (i) => makeRecord(i, { 'url.path': `${path}/${i}` }));
  return journalShipment(journalDir, key, sidecarId);
}

const copy = (segment: Segment): Segment => ({ links: segment.links.map((l) => ({ ...l, records: l.records.map((r) => Buffer.from(r)) })) });
const recordsLink = (segment: Segment): WireLink => segment.links.find((l) => l.kind === 'records')!;

async function storedCount(c: TestCollector): Promise<number> {
  const body = await (await fetch(`${c.httpUrl}/v1/records?limit=1000`, c.readAuth)).text();
  return body.split('\n').filter((l) => l !== '').length;
}

interface Case {
  title: string;
  code: RefusalCode;
  status: grpc.status;
  /** What a second stream sends after the first one shipped a segment (acked): its first message instead of the Hello, a segment after the Hello, or another token. */
  bad(s: JournalShipment, t: ExecutionContext): Promise<{ first?: object; segment?: Segment; token?: string | null }>;
  /** Whether the refused thing was a segment (kept as evidence). */
  evidence: boolean;
}

const key = ephemeralSigningKey();

const cases: Case[] = [
  { title: 'segments out of order are refused as a gap', code: 'gap', status: grpc.status.FAILED_PRECONDITION, evidence: true, bad: async (s) => ({ segment: s.segments[2] }) },
  {
    title: 'links reordered inside a segment are refused as a gap',
    code: 'gap',
    status: grpc.status.FAILED_PRECONDITION,
    evidence: true,
    // The next two segments' links in one, the later ones first.
    bad: async (s) => ({ segment: { links: [...s.segments[2].links, ...s.segments[1].links] } }),
  },
  {
    title: "a record's bytes changed in transit are refused as bad-root",
    code: 'bad-root',
    status: grpc.status.FAILED_PRECONDITION,
    evidence: true,
    bad: async (s) => {
      const seg = copy(s.segments[1]);
      const link = recordsLink(seg);
      link.records[0] = Buffer.from(link.records[0].toString().replace('/items/', '/itemz/'));
      return { segment: seg };
    },
  },
  {
    title: 'a link whose header was changed is refused as bad-chain',
    code: 'bad-chain',
    status: grpc.status.FAILED_PRECONDITION,
    evidence: true,
    bad: async (s) => {
      const seg = copy(s.segments[1]);
      seg.links[0].sealed_unix_ms += 1;
      return { segment: seg };
    },
  },
  {
    title: 'a bad signature on the closing link is refused as bad-signature',
    code: 'bad-signature',
    status: grpc.status.FAILED_PRECONDITION,
    evidence: true,
    bad: async (s) => {
      const seg = copy(s.segments[1]);
      const last = seg.links.at(-1)!;
      last.sig = (last.sig[0] === 'a' ? 'b' : 'a') + last.sig.slice(1);
      return { segment: seg };
    },
  },
  {
    title: 'a segment that does not end in a signed link is refused as bad-signature',
    code: 'bad-signature',
    status: grpc.status.FAILED_PRECONDITION,
    evidence: true,
    bad: async (s) => {
      const seg = copy(s.segments[1]);
      seg.links.at(-1)!.sig = '';
      return { segment: seg };
    },
  },
  {
    title: 'a resent batch that differs from the stored one is refused as a fork',
    code: 'fork',
    status: grpc.status.FAILED_PRECONDITION,
    evidence: true,
    // Another journal signed by the same key: same batch numbers, other records.
    bad: async (_s, t) => ({ segment: (await shipment(t, key, 'pod-a', '/other')).segments[0] }),
  },
  {
    // A Hello may present another key (a rotation), but only an epoch link the pinned key endorsed moves the pin.
    title: 'a pinned sidecar id, another key and a chain that does not continue the stored one: refused as key-mismatch',
    code: 'key-mismatch',
    status: grpc.status.PERMISSION_DENIED,
    evidence: true,
    bad: async (_s, t) => {
      const other = await shipment(t, ephemeralSigningKey());
      return { first: { hello: other.hello }, segment: other.segments[0] };
    },
  },
  {
    // Anyone holding a collector token knows a sidecar's public key; only the sidecar can sign with it.
    title: 'a Hello presenting a pinned key it cannot sign with is refused as bad-signature',
    code: 'bad-signature',
    status: grpc.status.FAILED_PRECONDITION,
    evidence: false,
    bad: async (s) => {
      const unixMs = Date.now();
      return { first: { hello: { ...s.hello, unix_ms: unixMs, sig: ephemeralSigningKey().sign(helloSigningInput(s.hello.sidecar_id, s.hello.key_id, unixMs)) } } };
    },
  },
  {
    title: 'an unsigned Hello is refused as malformed',
    code: 'malformed',
    status: grpc.status.INVALID_ARGUMENT,
    evidence: false,
    bad: async (s) => ({ first: { hello: { ...s.hello, unix_ms: 0, sig: '' } } }),
  },
  {
    title: 'a Hello signed an hour ago (replayed) is refused as malformed',
    code: 'malformed',
    status: grpc.status.INVALID_ARGUMENT,
    evidence: false,
    bad: async (s) => ({ first: { hello: signedHello(key, s.hello.sidecar_id, s.hello.service, Date.now() - 3_600_000) } }),
  },
  { title: 'a stream with a wrong token is refused as unauthenticated', code: 'unauthenticated', status: grpc.status.UNAUTHENTICATED, evidence: false, bad: async () => ({ token: 'not-the-token' }) },
  { title: 'a stream with no token is refused as unauthenticated', code: 'unauthenticated', status: grpc.status.UNAUTHENTICATED, evidence: false, bad: async () => ({ token: null }) },
  {
    title: 'garbage in a link is refused as malformed',
    code: 'malformed',
    status: grpc.status.INVALID_ARGUMENT,
    evidence: true,
    bad: async (s) => {
      const seg = copy(s.segments[1]);
      seg.links[0].root = 'not hex';
      return { segment: seg };
    },
  },
  { title: 'a segment before any Hello is refused as malformed', code: 'malformed', status: grpc.status.INVALID_ARGUMENT, evidence: false, bad: async (s) => ({ first: { segment: s.segments[1] } }) },
];

for (const c of cases) {
  test(c.title, async (t) => {
    const collector = await startTestCollector(t);
    const s = await shipment(t, key);
    const good = openSync(t, collector.grpcAddress, collector.token);
    good.send({ hello: s.hello });
    await good.next();
    good.send({ segment: s.segments[0] });
    t.like(await good.next(), { body: 'ack' });
    good.close();
    const before = await storedCount(collector);

    const bad = await c.bad(s, t);
    const peer = openSync(t, collector.grpcAddress, bad.token === undefined ? collector.token : bad.token);
    // A stream that fails auth gets its refusal before any message is read.
    if (bad.token === undefined) {
      peer.send(bad.first ?? { hello: s.hello });
      if (bad.first === undefined || bad.segment !== undefined) t.like(await peer.next(), { body: 'welcome' });
      if (bad.segment !== undefined) peer.send({ segment: bad.segment });
    }
    const refusal = await peer.next();
    t.is(refusal.body, 'refusal');
    t.is('refusal' in refusal && refusal.refusal.code, c.code, 'refusal' in refusal ? refusal.refusal.reason : '');
    t.true('refusal' in refusal && refusal.refusal.reason.length > 10);
    t.is((await peer.status).code, c.status);

    const metrics = await (await fetch(`${collector.httpUrl}/metrics`)).text();
    t.is(metricValue(metrics, 'auditmesh_collector_verification_failures_total', { reason: c.code }), 1);
    t.is(await storedCount(collector), before, 'nothing of it stored');
    // The evidence is written after the refusal is sent (sync-server.ts keepEvidence): wait for that write, not for the refusal.
    if (c.evidence) await until(async () => (await collector.store.evidence()).length > 0, 'the evidence of the refused segment stored');
    const evidence = await collector.store.evidence();
    t.is(evidence.length, c.evidence ? 1 : 0);
    if (c.evidence) t.is(evidence[0].code, c.code);
    if (c.evidence && bad.segment !== undefined) t.deepEqual(evidence[0].links.map((l) => (l as { records: string[] }).records), bad.segment.links.map((l) => l.records.map((r) => Buffer.from(r).toString('base64'))), 'the evidence holds the records as sent');

    // The collector keeps serving: the next segment of the valid chain is still accepted.
    const next = openSync(t, collector.grpcAddress, collector.token);
    next.send({ hello: s.hello });
    t.like(await next.next(), { body: 'welcome', welcome: { acked_batch: s.segments[0].links.at(-1)!.batch } });
    next.send({ segment: s.segments[1] });
    t.like(await next.next(), { body: 'ack', ack: { through_batch: s.segments[1].links.at(-1)!.batch } });
  });
}

test('a large segment, hashed where it arrived, refused as bad-root: the evidence still holds every record as sent', async (t) => {
  // Records of over 4 KB: the segment's message is larger than Buffer's shared pool, so the
  // collector hands the message's own buffer to its hashing worker (hash-pool.ts, inPlace).
  const s = await shipment(t, key, 'pod-large', `/${'x'.repeat(4096)}`);
  const size = (g: Segment): number => g.links.flatMap((l) => l.records).reduce((a, r) => a + r.length, 0);
  const k = s.segments.findIndex((g) => size(g) > Buffer.poolSize);
  t.true(k >= 0, `segments of ${s.segments.map(size).join(', ')} bytes`);
  const seg = copy(s.segments[k]);
  const link = recordsLink(seg);
  link.records[1] = Buffer.from(link.records[1].toString().replace('/x', '/y'));
  const collector = await startTestCollector(t);
  const peer = openSync(t, collector.grpcAddress, collector.token);
  peer.send({ hello: s.hello });
  t.like(await peer.next(), { body: 'welcome' });
  for (const before of s.segments.slice(0, k)) {
    peer.send({ segment: before });
    t.like(await peer.next(), { body: 'ack' });
  }
  peer.send({ segment: seg });
  t.like(await peer.next(), { body: 'refusal', refusal: { code: 'bad-root' } });
  // Evidence is written beside the refusal, not before it.
  await eventually('the evidence is kept', async () => (await collector.store.evidence()).length === 1);
  const [evidence] = await collector.store.evidence();
  t.false(evidence.truncated);
  t.deepEqual(evidence.links.map((l) => (l as { records: string[] }).records), seg.links.map((l) => l.records.map((r) => r.toString('base64'))));
});

test('a token holder cannot take over a sidecar\'s stream: its Hello in the sidecar\'s name is refused and the sidecar\'s stream goes on', async (t) => {
  const collector = await startTestCollector(t);
  const s = await shipment(t, key, 'pod-victim');
  const sidecar = openSync(t, collector.grpcAddress, collector.token);
  sidecar.send({ hello: s.hello });
  t.like(await sidecar.next(), { body: 'welcome' });
  sidecar.send({ segment: s.segments[0] });
  t.like(await sidecar.next(), { body: 'ack' });

  // Same token, same sidecar id, same public key; signed with a key of its own.
  const unixMs = Date.now();
  const intruder = openSync(t, collector.grpcAddress, collector.token);
  intruder.send({ hello: { ...s.hello, unix_ms: unixMs, sig: ephemeralSigningKey().sign(helloSigningInput(s.hello.sidecar_id, s.hello.key_id, unixMs)) } });
  t.like(await intruder.next(), { body: 'refusal', refusal: { code: 'bad-signature' } });
  t.is((await intruder.status).code, grpc.status.FAILED_PRECONDITION);
  // A replayed Hello of the sidecar itself, an hour old, is refused too.
  const replay = openSync(t, collector.grpcAddress, collector.token);
  replay.send({ hello: signedHello(key, s.hello.sidecar_id, s.hello.service, Date.now() - 3_600_000) });
  t.like(await replay.next(), { body: 'refusal', refusal: { code: 'malformed' } });

  // The sidecar's own stream was never superseded: it ships on, on the same stream.
  sidecar.send({ segment: s.segments[1] });
  t.like(await sidecar.next(), { body: 'ack', ack: { through_batch: s.segments[1].links.at(-1)!.batch } });
  // And a Hello the sidecar signed now takes its stream over, as a reconnect does.
  const reconnect = openSync(t, collector.grpcAddress, collector.token);
  reconnect.send({ hello: signedHello(key, s.hello.sidecar_id, s.hello.service) });
  t.like(await reconnect.next(), { body: 'welcome', welcome: { acked_batch: s.segments[1].links.at(-1)!.batch } });
  t.is((await sidecar.status).code, grpc.status.ABORTED, 'the older stream is ended by the newer one');
});
