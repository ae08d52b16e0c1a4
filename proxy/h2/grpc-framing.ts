const PREFIX_BYTES = 5;

/**
 * Counts gRPC messages in a byte stream from their length-prefixed framing (1 flag byte, 4-byte
 * big-endian length, payload), without decoding or copying payloads. Chunks may split a prefix
 * or a payload anywhere.
 */
export interface GrpcMessageCounter {
  /** Feeds the next chunk of the stream. */
  push(chunk: Buffer): void;
  /** Messages whose prefix has been seen. */
  readonly messages: number;
  /** Largest declared message length seen. */
  readonly largestMessageBytes: number;
  /** Messages flagged compressed (flag byte 1). */
  readonly compressedMessages: number;
  /** Messages whose flag byte is neither 0 nor 1: malformed framing. */
  readonly invalidFlags: number;
  /** Bytes fed in total. */
  readonly bytes: number;
}

export function createGrpcMessageCounter(): GrpcMessageCounter {
  let messages = 0;
  let bytes = 0;
  let largest = 0;
  let compressed = 0;
  let invalid = 0;
  // Bytes of the current prefix collected so far, and the payload still to skip.
  const prefix = Buffer.alloc(PREFIX_BYTES);
  let prefixHave = 0;
  let payloadLeft = 0;
  return {
    push(chunk) {
      bytes += chunk.length;
      let p = 0;
      while (p < chunk.length) {
        if (payloadLeft > 0) {
          const skip = Math.min(payloadLeft, chunk.length - p);
          payloadLeft -= skip;
          p += skip;
          continue;
        }
        const take = Math.min(PREFIX_BYTES - prefixHave, chunk.length - p);
        chunk.copy(prefix, prefixHave, p, p + take);
        prefixHave += take;
        p += take;
        if (prefixHave === PREFIX_BYTES) {
          messages++;
          if (prefix[0] === 1) compressed++;
          else if (prefix[0] !== 0) invalid++;
          payloadLeft = prefix.readUInt32BE(1);
          largest = Math.max(largest, payloadLeft);
          prefixHave = 0;
        }
      }
    },
    get messages() {
      return messages;
    },
    get largestMessageBytes() {
      return largest;
    },
    get compressedMessages() {
      return compressed;
    },
    get invalidFlags() {
      return invalid;
    },
    get bytes() {
      return bytes;
    },
  };
}

const TIMEOUT_UNITS_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** `grpc-timeout` (gRPC over HTTP/2 spec: up to 8 digits and a unit) in milliseconds; null if malformed. */
export function parseGrpcTimeout(value: string | string[] | undefined): number | null {
  if (typeof value !== 'string') return null;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return null;
  return Number(m[1]) * TIMEOUT_UNITS_MS[m[2]!]!;
}

/** `/pkg.Service/Method` → its parts; null when the path is not a gRPC method path. */
export function parseGrpcPath(path: string | undefined): { service: string; method: string } | null {
  if (path === undefined) return null;
  const m = /^\/([^/?]+)\/([^/?]+)$/.exec(path);
  return m === null ? null : { service: m[1]!, method: m[2]! };
}
