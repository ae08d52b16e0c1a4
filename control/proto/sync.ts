import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { LinkFields } from '../../proxy/journal/chain.js';

/**
 * sync.proto loaded once, and the TypeScript shape of its messages as @grpc/proto-loader hands
 * them over (keepCase, longs as Number, defaults): the one home of the wire types on both sides.
 */

// tsc does not copy the .proto into build/: from build/control/proto/ it is found in the sources.
const beside = fileURLToPath(new URL('./sync.proto', import.meta.url));
const PROTO_PATH = existsSync(beside) ? beside : fileURLToPath(new URL('../../../control/proto/sync.proto', import.meta.url));

export const SYNC_LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, defaults: true, oneofs: true };

const definition = protoLoader.loadSync(PROTO_PATH, SYNC_LOADER_OPTIONS);
const pkg = grpc.loadPackageDefinition(definition) as unknown as { auditmesh: { sync: { v1: { Collector: grpc.ServiceClientConstructor } } } };

/** The Collector service: a client constructor, and `.service` for a server's addService(). */
export const CollectorService = pkg.auditmesh.sync.v1.Collector;

export interface Hello {
  sidecar_id: string;
  service: string;
  public_key: Buffer;
  key_id: string;
  version: string;
  base_head: string;
  first_batch: number;
}

/** One chain link with its records (proxy/journal/read-journal.ts BatchHeader plus bytes). */
export interface WireLink extends Omit<LinkFields, 'kind'> {
  /** A LinkKind when it came from a journal; untrusted on the collector's side. */
  kind: string;
  head: string;
  key: string;
  sig: string;
  records: Buffer[];
}

export interface Segment {
  links: WireLink[];
}

export interface Heartbeat {
  unix_ms: number;
  last_batch: number;
  head: string;
  sig: string;
}

export interface Welcome {
  acked_batch: number;
  acked_head: string;
}

export interface Ack {
  through_batch: number;
  head: string;
}

export interface Refusal {
  code: string;
  reason: string;
  batch: number;
}

/** What a sidecar sends; `body` names the field that is set when received (oneofs: true). */
export type SidecarMessage = ({ hello: Hello } | { segment: Segment } | { heartbeat: Heartbeat }) & { body?: 'hello' | 'segment' | 'heartbeat' };

/** What a collector sends; received with `body` naming the set field. */
export interface CollectorMessage {
  body?: 'welcome' | 'ack' | 'refusal';
  welcome?: Welcome | null;
  ack?: Ack | null;
  refusal?: Refusal | null;
}
