import { X509Certificate } from 'node:crypto';
import { GENESIS_HEAD, heartbeatSigningInput, helloSigningInput, keyIdOf, publicKeyFromSpki, verifySignature } from '../../../ledger/chain.js';
import { ChainBroken, fail, LinkVerifier, recordsRoot, type ChainPosition, type ResolvedKey } from '../../../ledger/link-verifier.js';
import type { BatchHeader } from '../../../ledger/journal-layout.js';
import type { Hello, Heartbeat, Segment, WireLink } from '../../../wire/sync-wire.js';
import type { CollectorStore, LostRange, SidecarState, StoredLink } from '../collector-store.js';
import type { HashPool } from './hash-pool.js';
import { SidecarChain, type PresentedKey, type StoredRun } from './sidecar-chain.js';
import { keepCertificate, keyChangeFork, previousKey, repin, streamCertified } from './key-rotation.js';
import { segmentHeaders } from './wire-links.js';
import { chainKey, chainKeyOf } from '../store/chain-key.js';

/**
 * What ingest does with each message of a Sync stream, apart from the stream itself
 * (sync-server.ts): Hello pins or checks the key and says where to resume; a Segment is
 * verified from the verified tip of its sidecar's chain, deduped against what is held, and queued
 * for the store; a Heartbeat is checked against the pinned key. Everything it refuses throws
 * ChainBroken with the Refusal code. It depends on the store only through CollectorStore.
 */

/** `@` is not among them: it separates a sidecar id from its incarnation in a chain key (store/chain-key.ts). */
const SIDECAR_ID = /^[\w.:/-]{1,253}$/;
/** A pod uid as the API server makes them (a UUID), or any name of that alphabet: part of a chain key. */
const INCARNATION = /^[\w.-]{0,128}$/;
const HEX64 = /^[0-9a-f]{64}$/;
/** A heartbeat from further ahead than this is refused: a clock that far off is not believed. */
const HEARTBEAT_MAX_FUTURE_MS = 5 * 60_000;
/** A Hello signed further than this from the collector's clock, either way, is refused: a replay, or a clock to fix. */
export const HELLO_MAX_SKEW_MS = 10 * 60_000;

/** Where a sidecar's retained chain starts, as its Hello said: the claim a loss is checked against. */
export interface RetainedStart {
  first_batch: number;
  base_head: string;
}

export interface SegmentOutcome {
  /** Settles once every new link is durably stored (at once when there were none). */
  stored: Promise<void>;
  through_batch: number;
  head: string;
  links: number;
  duplicates: number;
  records: number;
  /** Batches recorded as lost by this segment (see LostRange), or null. */
  lost: LostRange | null;
}

/** The collector as a witness of sidecar heads (witness/head-witness.ts): both throw ChainBroken (`fork`) for a chain that contradicts a head witnessed earlier. */
export interface HeadCheck {
  /** Verified links about to be stored, of the chain `chainKey` (SIDECAR_ID@POD_UID; never the bare sidecar id). */
  checkLinks(chainKey: string, links: readonly BatchHeader[]): void;
  /** A heartbeat that verified and is newer than the one before. */
  heartbeat(chain: SidecarChain, hb: Heartbeat, receivedUnixMs: number): void;
}

export class Ingest {
  readonly chains = new Map<string, SidecarChain>();
  #store: CollectorStore;
  #hasher: HashPool;
  #onStored: (run: StoredRun) => void;
  /** The mesh CA (with mTLS): a key change its certificate of the new key endorses is taken; null: only the previous key endorses. */
  #ca: readonly X509Certificate[] | null;
  #heads: HeadCheck | undefined;

  private constructor(store: CollectorStore, hasher: HashPool, onStored: (run: StoredRun) => void, ca: readonly X509Certificate[] | null, heads: HeadCheck | undefined) {
    this.#store = store;
    this.#hasher = hasher;
    this.#onStored = onStored;
    this.#ca = ca;
    this.#heads = heads;
  }

  /** Loads every stored chain's state, by chain key. */
  static async open(store: CollectorStore, hasher: HashPool, onStored: (run: StoredRun) => void, ca: readonly X509Certificate[] | null = null, heads?: HeadCheck): Promise<Ingest> {
    const ingest = new Ingest(store, hasher, onStored, ca, heads);
    for (const state of await store.sidecars()) ingest.chains.set(chainKeyOf(state), new SidecarChain(state, store, onStored));
    return ingest;
  }

  /**
   * First contact of an incarnation pins the key (and the chain's start); later ones must present
   * the same key, or change it only through an endorsed epoch link. `incarnation` is the pod uid
   * the stream's ServiceAccount token names ('' for none): an incarnation never seen before
   * starts a chain of its own, whatever the sidecar's other incarnations hold, and a known one
   * (an older pod draining its journal included) resumes its own chain; two incarnations never
   * share one. Every Hello is signed with the key it presents, so a collector token alone cannot
   * open a stream in another sidecar's name and take over its stream (the older stream of a chain
   * is ended by the newer one). `clientCertificate`: the stream's mTLS certificate (DER), already
   * checked to be from the mesh CA; kept with the presented key as its possible certification.
   */
  async hello(h: Hello, incarnation = '', clientCertificate?: Buffer): Promise<SidecarChain> {
    if (typeof h.sidecar_id !== 'string' || !SIDECAR_ID.test(h.sidecar_id)) fail({ code: 'malformed', problem: 'Hello.sidecar_id must be 1-253 letters, digits or . _ - : /' });
    if (!INCARNATION.test(incarnation)) fail({ code: 'unauthenticated', problem: `the token's pod uid ${JSON.stringify(incarnation.slice(0, 64))} is not a pod uid` });
    const key = chainKey(h.sidecar_id, incarnation);
    const spki = Buffer.from(h.public_key ?? []);
    const presented = publicKeyFromSpki(spki);
    if (presented === null) return fail({ code: 'malformed', problem: 'Hello.public_key is not an Ed25519 public key (DER SubjectPublicKeyInfo)' });
    const keyId = keyIdOf(spki);
    if (h.key_id !== keyId) fail({ code: 'malformed', problem: `Hello.key_id ${JSON.stringify(h.key_id)} is not the id of its public key (${keyId})` });
    const now = Date.now();
    if (!Number.isSafeInteger(h.unix_ms) || h.unix_ms <= 0) fail({ code: 'malformed', problem: 'Hello.unix_ms is missing: a Hello must be signed (auditmesh sidecar of this version or later)' });
    if (Math.abs(now - h.unix_ms) > HELLO_MAX_SKEW_MS) {
      fail({ code: 'malformed', problem: `Hello signed at ${new Date(h.unix_ms).toISOString()}, ${Math.round((h.unix_ms - now) / 1000)} s from the collector's clock (at most ${HELLO_MAX_SKEW_MS / 60_000} min either way): a replayed Hello, or a clock to fix` });
    }
    if (!verifySignature(helloSigningInput(h.sidecar_id, keyId, h.unix_ms), h.sig ?? '', presented)) {
      fail({ code: 'bad-signature', problem: `Hello for sidecar ${h.sidecar_id}: its signature does not verify with the key it presents (${keyId}); only the holder of a key opens a stream in its name` });
    }
    const presentedKey: PresentedKey = { keyId, spki, key: presented, ...(clientCertificate === undefined ? {} : { certificate: certificateFor(clientCertificate, spki) }) };
    let chain = this.chains.get(key);
    if (this.#store.current !== undefined) chain = await this.#adopt(key, chain, this.#store.current.bind(this.#store));
    if (chain !== undefined) {
      // Another key is taken only with an endorsed epoch link (key-rotation.ts).
      chain.presented = presentedKey;
      return chain;
    }
    const firstBatch = h.first_batch > 0 ? h.first_batch : 1;
    const baseHead = h.base_head === '' ? GENESIS_HEAD : h.base_head;
    if (!HEX64.test(baseHead)) fail({ code: 'malformed', problem: 'Hello.base_head must be 64 lowercase hex digits' });
    if (firstBatch === 1 && baseHead !== GENESIS_HEAD) fail({ code: 'malformed', problem: 'Hello.base_head must be the genesis head when first_batch is 1' });
    const state: SidecarState = {
      id: h.sidecar_id,
      ...(incarnation === '' ? {} : { incarnation }),
      service: typeof h.service === 'string' ? h.service.slice(0, 253) : '',
      key_id: keyId,
      public_key: spki.toString('base64'),
      first_batch: firstBatch,
      base_head: baseHead,
      // A chain that starts after pruned links: its first link sets the sequence numbers.
      position: { last_batch: firstBatch - 1, last_seq: firstBatch === 1 ? 0 : undefined, head: baseHead, last_signed: firstBatch - 1 },
      first_seen_unix_ms: now,
      last_seen_unix_ms: now,
    };
    await this.#store.putSidecar(state);
    // Another stream may have pinned the same chain while this one was writing.
    chain = this.chains.get(key);
    if (chain === undefined) this.chains.set(key, (chain = new SidecarChain(state, this.#store, this.#onStored)));
    else if (chain.state.key_id !== keyId) fail({ code: 'key-mismatch', problem: `sidecar ${key} is pinned to key ${chain.state.key_id}; this stream presents key ${keyId}` });
    chain.presented = presentedKey;
    return chain;
  }

  /** On a store other collectors write too: the chain as stored now, which another collector may have moved. */
  async #adopt(id: string, chain: SidecarChain | undefined, current: (id: string) => Promise<SidecarState | undefined>): Promise<SidecarChain | undefined> {
    await chain?.settled();
    const state = await current(id);
    if (state === undefined) return chain;
    chain = this.chains.get(id);
    if (chain === undefined) this.chains.set(id, (chain = new SidecarChain(state, this.#store, this.#onStored)));
    else chain.adopt(state);
    return chain;
  }

  /**
   * Verifies a segment from the chain's tip, dedupes what is held, queues the new links for the
   * store. A segment that starts past the tip is a gap, unless the sidecar said in its Hello that
   * its retained chain starts exactly there (`retained`): then it no longer holds what this
   * collector lacks (the collector lost data it had acknowledged), and those batches can never
   * arrive. The segment is verified from the head the Hello named; only once its signed link
   * proves the claim with the pinned key is the range recorded as lost, in the same write as the
   * links, and the chain goes on. A Hello alone moves nothing.
   */
  async segment(chain: SidecarChain, segment: Segment, retained?: RetainedStart, identity: string | null = null): Promise<SegmentOutcome> {
    const wire = segment?.links;
    const headers = segmentHeaders(wire);
    const held = headers.filter((h) => h.batch <= chain.tip.last_batch);
    if (held.length > 0) await this.#checkHeld(chain, held, wire);
    const fresh = headers.length - held.length;
    const last = headers[headers.length - 1];
    if (fresh === 0) return { stored: chain.settled(), through_batch: last.batch, head: last.head, links: headers.length, duplicates: held.length, records: 0, lost: null };
    // Leaf hashes, roots, index entries and the batches' values in a worker; here only roots and heads are compared.
    const tip = chain.tip;
    const toHash = headers.slice(held.length).flatMap((h, j) => (h.kind === 'records' ? [{ batch: h.batch, firstSeq: h.first_seq, records: wire[held.length + j].records }] : []));
    const hashed = await this.#hasher.hash(chain.chainKey, toHash);
    let verified: { links: StoredLink[]; records: number; lost: LostRange | null };
    try {
      verified = this.#verify(chain, tip, headers, held.length, hashed.roots, hashed.leaves, retained);
    } catch (err) {
      // A refused segment is kept as evidence, records included.
      hashed.restore();
      throw err;
    }
    const { links, records, lost } = verified;
    // The writer's proven identity, stamped per batch beside its records (their bytes stay as hashed).
    if (identity !== null) for (const b of hashed.batches) b.identity = identity;
    // The pinned key's certificate goes in with the links: the identity a later CA-endorsed key change must continue.
    keepCertificate(chain);
    const sidecar: SidecarState = { ...chain.state, position: chain.tip, last_seen_unix_ms: Date.now(), ...(chain.lost.length > 0 ? { lost: chain.lost } : {}) };
    return { stored: chain.write({ sidecar, links, batches: hashed.batches }), through_batch: last.batch, head: last.head, links: headers.length, duplicates: held.length, records, lost };
  }

  /** Checks the fresh links (from `from`) against the roots the worker computed, from the chain's tip, and moves the tip past them. */
  #verify(chain: SidecarChain, tip: ChainPosition, headers: BatchHeader[], from: number, roots: string[], leaves: Buffer[], retained: RetainedStart | undefined): { links: StoredLink[]; records: number; lost: LostRange | null } {
    // Only this stream moves the tip between its own segments; anything else (a newer stream of the
    // same sidecar, a failed commit) makes this segment's place in the chain stale.
    if (chain.tip !== tip) fail({ code: 'gap', batch: headers[from].batch, problem: `the chain of sidecar ${chain.chainKey} moved while batch ${headers[from].batch} was verified: a newer stream took it over` });
    const first = headers[from].batch;
    const lost = from === 0 && first > chain.tip.last_batch + 1 && retained?.first_batch === first && HEX64.test(retained.base_head) ? { from_batch: chain.tip.last_batch + 1, to_batch: first - 1, base_head: retained.base_head, recorded_unix_ms: Date.now() } : null;
    // The first link after a loss sets the sequence numbers, as for a chain first seen after pruning.
    const start = lost === null ? chain.tip : { last_batch: lost.to_batch, last_seq: undefined, head: lost.base_head, last_signed: lost.to_batch };
    const verifier = new LinkVerifier({ ...start, epoch_key: start.epoch_key ?? chain.state.key_id }, {
      keyFor: (keyId, batch) => pinnedKey(chain, keyId, batch),
      certified: (change, spki) => streamCertified(chain, this.#ca, change, spki),
      onKeyChange: (change) => repin(chain, change),
    });
    const links: StoredLink[] = [];
    let records = 0;
    for (let i = from, k = 0; i < headers.length; i++) {
      const h = headers[i];
      if (h.kind !== 'records') {
        verifier.next(h, []);
        links.push(h);
        continue;
      }
      verifier.next(h, { root: roots[k] });
      links.push({ ...h, leaves: leaves[k++] });
      records += h.count;
    }
    this.#heads?.checkLinks(chain.chainKey, links);
    chain.tip = { ...verifier.position };
    if (lost !== null) chain.lost = [...chain.lost, lost];
    return { links, records, lost };
  }

  /** Links the collector already verified: each must be what it holds (else a fork), records included. */
  async #checkHeld(chain: SidecarChain, held: BatchHeader[], wire: WireLink[]): Promise<void> {
    await chain.settled();
    for (let i = 0; i < held.length; i++) {
      const h = held[i];
      if (h.batch < chain.state.first_batch) fail({ code: 'gap', batch: h.batch, problem: `batch ${h.batch} is before batch ${chain.state.first_batch}, where this collector's copy of the chain starts` });
      const stored = await this.#store.link(chain.chainKey, h.batch);
      if (stored === undefined) fail({ code: 'gap', batch: h.batch, problem: `batch ${h.batch} is not held although the chain is stored through batch ${chain.state.position.last_batch}` });
      if (stored!.head !== h.head) keyChangeFork(chain, h.batch);
      if (stored!.head !== h.head) fail({ code: 'fork', batch: h.batch, problem: `batch ${h.batch} differs from the batch ${h.batch} already stored (head ${h.head}, stored ${stored!.head}): the chain forked` });
      if (h.kind === 'records' && recordsRoot(wire[i].records).root !== h.root) {
        fail({ code: 'bad-root', batch: h.batch, problem: `batch ${h.batch} (a resend of a stored batch): the Merkle root of its records does not match its header` });
      }
    }
  }

  /** A signed heartbeat; an old or replayed one is ignored, a badly signed one refused. */
  heartbeat(chain: SidecarChain, hb: Heartbeat): void {
    const now = Date.now();
    let input: Buffer;
    try {
      input = heartbeatSigningInput(chain.state.id, hb.unix_ms, hb.last_batch, hb.head);
    } catch (err) {
      return fail({ code: 'malformed', problem: `heartbeat: ${(err as Error).message}` });
    }
    // Signed by a key the Hello presented but the chain does not take yet (no endorsed epoch link so far): not believed, not refused.
    if (chain.presented !== undefined && chain.presented.keyId !== chain.state.key_id && verifySignature(input, hb.sig, chain.presented.key)) return;
    if (!verifySignature(input, hb.sig, chain.key)) fail({ code: 'bad-signature', batch: hb.last_batch, problem: `heartbeat at ${hb.unix_ms}: its signature does not verify with the pinned key ${chain.state.key_id}` });
    if (hb.unix_ms > now + HEARTBEAT_MAX_FUTURE_MS) fail({ code: 'malformed', problem: `heartbeat at ${hb.unix_ms} is more than ${HEARTBEAT_MAX_FUTURE_MS} ms ahead of the collector's clock` });
    if (chain.heartbeat !== undefined && hb.unix_ms <= chain.heartbeat.unix_ms) return;
    this.#heads?.heartbeat(chain, hb, now);
    chain.heartbeat = { unix_ms: hb.unix_ms, received_unix_ms: now, last_batch: hb.last_batch, head: hb.head };
  }
}

/** The client certificate as PresentedKey keeps it; `spkiMatches` when it is a certificate of `spki`. */
function certificateFor(der: Buffer, spki: Buffer): { der: string; spkiMatches: boolean } {
  let spkiMatches = false;
  try {
    spkiMatches = new X509Certificate(der).publicKey.export({ format: 'der', type: 'spki' }).equals(spki);
  } catch {
    // peer-identity.ts parsed it already; unreadable here means it certifies nothing.
  }
  return { der: der.toString('base64'), spkiMatches };
}

function pinnedKey(chain: SidecarChain, keyId: string, batch: number): ResolvedKey {
  if (keyId === chain.state.key_id) return { spki: chain.spki, key: chain.key };
  if (keyId === chain.presented?.keyId) return chain.presented;
  const before = previousKey(chain.state, keyId);
  if (before !== undefined) return before;
  return fail({ code: 'key-mismatch', batch, problem: `batch ${batch} names key ${keyId}, but sidecar ${chain.state.id} is pinned to key ${chain.state.key_id}` });
}

export { ChainBroken };
