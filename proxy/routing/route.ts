import type { MeshPeer } from '../mesh/directory.js';

/** Where one request or connection goes: an address and port. */
export interface UpstreamTarget {
  host: string;
  port: number;
  /**
   * Set when the mesh directory lists this address as a meshed pod: the connection is mTLS to its
   * sidecar (proxy/mesh/), which must prove this identity; it is never sent in plaintext.
   */
  mesh?: MeshPeer;
}

/** Where an outbound request goes, and the origin-form path to send it with. */
export interface Route {
  /** Where the request is sent. */
  target: UpstreamTarget;
  /**
   * What the record names as the server: on a redirected connection the original destination
   * (where the bytes went); otherwise the host and port the client asked for (they differ from
   * target when a static resolve entry applies).
   */
  host: string;
  port: number;
  path: string;
  /**
   * On a redirected connection, the destination the client named (Host, `:authority` or SNI)
   * when it is not the original destination: a claim, recorded beside the address. `host` is
   * null when the claim does not parse as `host[:port]`.
   */
  claimed?: { authority: string; host: string | null };
  /** Outbound to an address the mesh directory does not list while it is stale (proxy/mesh/). */
  directoryStale?: true;
}
