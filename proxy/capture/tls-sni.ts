/**
 * The server name (SNI) of a TLS ClientHello, or null when the bytes are not a complete
 * ClientHello carrying one. Reads only the first record; never throws on hostile input.
 * Layout: RFC 8446 §4.1.2 (ClientHello) and RFC 6066 §3 (server_name extension).
 */
export function parseSni(buf: Buffer): string | null {
  try {
    return readSni(buf);
  } catch {
    return null;
  }
}

const HANDSHAKE = 0x16;
const CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const NAME_TYPE_HOST = 0x00;
const MAX_NAME_CHARS = 253;

function readSni(buf: Buffer): string | null {
  if (buf.length < 5 || buf[0] !== HANDSHAKE) return null;
  const recordEnd = Math.min(buf.length, 5 + buf.readUInt16BE(3));
  let p = 5;
  if (buf[p] !== CLIENT_HELLO) return null;
  p += 4; // handshake type + 24-bit length
  p += 2 + 32; // legacy_version + random
  p += 1 + buf[p]!; // session id
  p += 2 + buf.readUInt16BE(p); // cipher suites
  p += 1 + buf[p]!; // compression methods
  const extEnd = Math.min(recordEnd, p + 2 + buf.readUInt16BE(p));
  p += 2;
  while (p + 4 <= extEnd) {
    const type = buf.readUInt16BE(p);
    const len = buf.readUInt16BE(p + 2);
    p += 4;
    if (type === EXT_SERVER_NAME) {
      let q = p + 2; // server_name_list length
      const listEnd = Math.min(p + len, extEnd);
      while (q + 3 <= listEnd) {
        const nameType = buf[q]!;
        const nameLen = buf.readUInt16BE(q + 1);
        q += 3;
        if (nameType === NAME_TYPE_HOST && q + nameLen <= listEnd && nameLen <= MAX_NAME_CHARS) {
          const name = buf.toString('latin1', q, q + nameLen);
          return /^[a-zA-Z0-9.-]+$/.test(name) ? name.toLowerCase() : null;
        }
        q += nameLen;
      }
      return null;
    }
    p += len;
  }
  return null;
}
