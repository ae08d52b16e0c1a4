/** Where one request or connection goes: an address and port. */
export interface UpstreamTarget {
  host: string;
  port: number;
}

/** Where an outbound request goes, and the origin-form path to send it with. */
export interface Route {
  /** Where the request is sent. */
  target: UpstreamTarget;
  /** The host and port the client asked for (they differ from target when a static resolve entry applies). */
  host: string;
  port: number;
  path: string;
}
