import net from 'node:net';
import { H2_PREFACE } from '../../proxy/capture/detect.js';

/**
 * Raw HTTP/2 frames (RFC 9113 §4) for abuse that node:http2 refuses to send itself: floods,
 * protocol errors, resets provoked on purpose. Header blocks use HPACK literals without indexing
 * and without Huffman coding (RFC 7541 §6.2.2), which every decoder must accept.
 */
export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1); the first byte's high bits are 0. */
function hpackInt(value: number, prefixBits: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([value]);
  const bytes = [max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** A header block of literal fields, names and values taken as latin1 bytes. */
export function headerBlock(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    parts.push(Buffer.from([0]), hpackInt(n.length, 7), n, hpackInt(v.length, 7), v);
  }
  return Buffer.concat(parts);
}

/** The request headers of a gRPC call to the Echo service's `method`. */
export function grpcRequestBlock(method: string, extra: ReadonlyArray<readonly [string, string]> = []): Buffer {
  return headerBlock([[':method', 'POST'], [':scheme', 'http'], [':path', `/test.Echo/${method}`], [':authority', 'x'], ['content-type', 'application/grpc'], ['te', 'trailers'], ...extra]);
}

/** One gRPC message: flag byte, 4-byte length, payload. */
export function grpcMessage(payload: Buffer, flag = 0): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = flag;
  prefix.writeUInt32BE(payload.length, 1);
  return Buffer.concat([prefix, payload]);
}

/** An EchoRequest in protobuf wire format: text (1), count (2), delay_ms (5). */
export function echoRequest(req: { text?: string; count?: number; delayMs?: number }): Buffer {
  const parts: Buffer[] = [];
  if (req.text !== undefined) {
    const text = Buffer.from(req.text);
    parts.push(Buffer.from([0x0a, text.length]), text);
  }
  const varint = (tag: number, n: number): Buffer => {
    const bytes = [tag];
    for (; n >= 128; n = Math.floor(n / 128)) bytes.push((n % 128) + 128);
    bytes.push(n);
    return Buffer.from(bytes);
  };
  if (req.count !== undefined) parts.push(varint(0x10, req.count));
  if (req.delayMs !== undefined) parts.push(varint(0x28, req.delayMs));
  return Buffer.concat(parts);
}

export interface ReceivedFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export interface RawH2 {
  socket: net.Socket;
  /** Frames from the sidecar so far. */
  frames: ReceivedFrame[];
  send(bytes: Buffer): void;
  /** Resolves when the sidecar closed the connection. */
  closed: Promise<void>;
  /** Resolves with the first received frame matching pred. */
  next(pred: (f: ReceivedFrame) => boolean, timeoutMs?: number): Promise<ReceivedFrame>;
}

/** A raw HTTP/2 client: preface and empty SETTINGS sent, the server's SETTINGS acknowledged. */
export async function rawH2(port: number): Promise<RawH2> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const frames: ReceivedFrame[] = [];
  const waiters: Array<{ pred: (f: ReceivedFrame) => boolean; resolve: (f: ReceivedFrame) => void }> = [];
  let buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    while (buffer.length >= 9 && buffer.length >= 9 + buffer.readUIntBE(0, 3)) {
      const length = buffer.readUIntBE(0, 3);
      const f = { type: buffer[3]!, flags: buffer[4]!, streamId: buffer.readUInt32BE(5) & 0x7fffffff, payload: buffer.subarray(9, 9 + length) };
      buffer = buffer.subarray(9 + length);
      frames.push(f);
      if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0 && !socket.destroyed) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
      for (const w of [...waiters]) {
        if (!w.pred(f)) continue;
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(f);
      }
    }
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write(Buffer.concat([H2_PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
  return {
    socket,
    frames,
    closed,
    send: (bytes) => void (socket.destroyed ? undefined : socket.write(bytes)),
    next(pred, timeoutMs = 10_000) {
      const found = frames.find(pred);
      if (found !== undefined) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms; got types ${frames.map((f) => f.type).join(',')}`)), timeoutMs);
        waiters.push({ pred, resolve: (f) => (clearTimeout(timer), resolve(f)) });
      });
    },
  };
}

/** Waits until the connection closes, or returns false after timeoutMs with it still open. */
export function closedWithin(raw: RawH2, timeoutMs: number): Promise<boolean> {
  return Promise.race([raw.closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs))]);
}
