import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { FailureCode } from '../ledger/link-verifier.js';
import type { BatchHeader } from '../ledger/journal-layout.js';

/**
 * sync.proto loaded for @grpc/grpc-js, and its messages as TypeScript types: the one place both
 * the shipper and the collector get the wire format from. Field names are the .proto's
 * (keepCase), uint64 arrive as numbers (longs: Number; batch and seq numbers stay below 2^53).
 */

/**
 * The .proto next to this module when running from source (tsx), or in the package's own
 * wire/ when running from build/ (tsc does not copy it: build/wire/ -> ../../wire/).
 */
function protoPath(): string {
  const candidates = [new URL('./sync.proto', import.meta.url), new URL('../../wire/sync.proto', import.meta.url)].map((u) => fileURLToPath(u));
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`sync.proto not found (looked at ${candidates.join(', ')})`);
  return found;
}

export const SYNC_PROTO_PATH = protoPath();

const definition = protoLoader.loadSync(SYNC_PROTO_PATH, { keepCase: true, longs: Number, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(definition) as unknown as { auditmesh: { sync: { v1: { Collector: grpc.ServiceClientConstructor; Identity: grpc.ServiceClientConstructor; Directory: grpc.ServiceClientConstructor } } } };

/** The generated client class; `CollectorClient.service` is the service definition for servers. */
export const CollectorClient = pkg.auditmesh.sync.v1.Collector;
export const COLLECTOR_SERVICE = CollectorClient.service;
/** The mesh CA's Certify, on the collector's gRPC port. */
export const IdentityClient = pkg.auditmesh.sync.v1.Identity;
export const IDENTITY_SERVICE = IdentityClient.service;

/** The mesh directory's Watch, on the collector's gRPC port. */
export const DirectoryClient = pkg.auditmesh.sync.v1.Directory;
export const DIRECTORY_SERVICE = DirectoryClient.service;

/** One meshed pod of the directory: its address, the SPIFFE ID it proved, its sidecar id and service. */
export interface DirectoryEntry {
  ip: string;
  identity: string;
  sidecar_id: string;
  service: string;
}

/** Directory.Watch's request: nothing to ask yet (the whole directory is served). */
export type DirectoryWatch = Record<string, never>;

export interface DirectoryUpdate {
  /** The stream's first message: `added` is the whole directory. */
  snapshot: boolean;
  added: DirectoryEntry[];
  removed: string[];
  unix_ms: number;
}

export interface CertifyRequest {
  csr_pem: string;
}

export interface CertifyResponse {
  cert_chain_pem: string;
  ca_bundle_pem: string;
  not_after_unix_ms: number;
  spiffe_id: string;
}

export interface Hello {
  sidecar_id: string;
  service: string;
  public_key: Buffer;
  key_id: string;
  version: string;
  base_head: string;
  first_batch: number;
  /** When the Hello was signed (the collector's clock must agree within HELLO_MAX_SKEW_MS). */
  unix_ms: number;
  /** Ed25519 over helloSigningInput (ledger/chain.ts) with the key presented, lowercase hex. */
  sig: string;
  /** The pod's IP (--pod-ip); '' or absent from sidecars before the directory and outside Kubernetes. Not signed: believed only when it is the stream's source address. */
  pod_ip?: string;
}

/** One link of the chain with its records: the journal's BatchHeader, with proto3's '' for an absent key and sig. */
export type WireLink = Omit<BatchHeader, 'key' | 'sig' | 'endorsed_by' | 'endorsement'> & {
  key: string;
  /** On an epoch link that changes the key ('' otherwise): ledger/key-endorsement.ts. */
  endorsed_by?: string;
  endorsement?: string;
  sig: string;
  /** Canonical record bytes, seqs first_seq .. first_seq+count-1. */
  records: Buffer[];
};

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
  /** The collector's serving certificate chain (PEM, leaf first); '' (or absent when encoding) without the mesh CA. */
  cert_chain_pem?: string;
  /** Ed25519 over collectorAckSigningInput (ledger/chain.ts) with the leaf's key, lowercase hex; '' without the mesh CA. */
  sig?: string;
}

export interface Ack {
  through_batch: number;
  head: string;
  /** Ed25519 over collectorAckSigningInput with the key of the stream's Welcome, lowercase hex; '' without the mesh CA. */
  sig?: string;
}

/** The Refusal codes of sync.proto (their one home is the link verifier, which raises most of them). */
export type RefusalCode = FailureCode;

export interface Refusal {
  code: RefusalCode;
  reason: string;
  batch: number;
}

/** A decoded SidecarMessage: `body` names the oneof member that is set (proto-loader `oneofs`). */
export type SidecarMessage =
  | { body: 'hello'; hello: Hello }
  | { body: 'segment'; segment: Segment }
  | { body: 'heartbeat'; heartbeat: Heartbeat };

/** A CollectorMessage to encode, or as decoded (`body` is set on decode). */
export type CollectorMessage = { welcome: Welcome; body?: 'welcome' } | { ack: Ack; body?: 'ack' } | { refusal: Refusal; body?: 'refusal' };

/** Sidecar side of the Sync stream. */
export type SyncClientStream = grpc.ClientDuplexStream<SidecarMessage | Omit<SidecarMessage, 'body'>, CollectorMessage>;
/** Collector side of the Sync stream. */
export type SyncServerStream = grpc.ServerDuplexStream<SidecarMessage, CollectorMessage>;
