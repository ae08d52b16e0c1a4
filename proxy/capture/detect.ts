/** What the first bytes of a connection say it is. */
export type Detected = 'h2' | 'http1' | 'tls' | 'tcp';

/** The HTTP/2 client connection preface (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** Longest method token accepted before the first space of an HTTP/1 request line. */
const MAX_METHOD_CHARS = 20;
const TLS_HANDSHAKE = 0x16;

function isTokenChar(byte: number): boolean {
  // RFC 9110 tchar, upper-case letters only: methods are case-sensitive and conventionally upper.
  return (byte >= 0x41 && byte <= 0x5a) || byte === 0x2d || byte === 0x5f;
}

/**
 * Decides the protocol from the first bytes, or returns null when more bytes are needed. Never
 * throws: anything that is not the HTTP/2 preface, an HTTP/1 request line or a TLS handshake
 * is opaque TCP, relayed byte for byte.
 */
export function detectProtocol(buf: Buffer): Detected | null {
  if (buf.length === 0) return null;
  if (buf[0] === TLS_HANDSHAKE) return 'tls';
  const prefaceBytes = Math.min(buf.length, H2_PREFACE.length);
  if (buf.subarray(0, prefaceBytes).equals(H2_PREFACE.subarray(0, prefaceBytes))) {
    return buf.length >= H2_PREFACE.length ? 'h2' : null;
  }
  for (let i = 0; i < buf.length && i <= MAX_METHOD_CHARS; i++) {
    const byte = buf[i]!;
    if (byte === 0x20) return i > 0 ? 'http1' : 'tcp';
    if (!isTokenChar(byte)) return 'tcp';
  }
  return buf.length > MAX_METHOD_CHARS ? 'tcp' : null;
}
