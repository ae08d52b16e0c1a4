/**
 * What a TLS ClientHello says before any key is exchanged: the server name (SNI) and the ALPN
 * protocols offered. Reads only the first record; never throws on hostile input.
 * Layout: RFC 8446 §4.1.2 (ClientHello), RFC 6066 §3 (server_name), RFC 7301 §3.1 (ALPN).
 */
export interface ClientHelloFacts {
  /** The host name asked for, lower-cased; null when none (or not a plausible host name). */
  sni: string | null;
  /** The ALPN protocol names offered, in the client's order; empty when none. */
  alpn: string[];
}

/** The server name (SNI) of a TLS ClientHello, or null when the bytes are not a complete ClientHello carrying one. */
export function parseSni(buf: Buffer): string | null {
  return parseClientHello(buf)?.sni ?? null;
}

/** The SNI and ALPN of a TLS ClientHello, or null when the bytes are not one. */
export function parseClientHello(buf: Buffer): ClientHelloFacts | null {
  try {
    return readClientHello(buf);
  } catch {
    return null;
  }
}

const HANDSHAKE = 0x16;
const CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
const NAME_TYPE_HOST = 0x00;
const MAX_NAME_CHARS = 253;
/** More protocols than any client offers: the rest are ignored. */
const MAX_ALPN_PROTOCOLS = 16;

function readClientHello(buf: Buffer): ClientHelloFacts | null {
  if (buf.length < 5 || buf[0] !== HANDSHAKE) return null;
  const recordEnd = Math.min(buf.length, 5 + buf.readUInt16BE(3));
  let p = 5;
  if (buf[p] !== CLIENT_HELLO) return null;
  p += 4; // handshake type + 24-bit length
  p += 2 + 32; // legacy_version + random
  p += 1 + buf[p]!; // session id
  p += 2 + buf.readUInt16BE(p); // cipher suites
  p += 1 + buf[p]!; // compression methods
  const facts: ClientHelloFacts = { sni: null, alpn: [] };
  if (p + 2 > recordEnd) return facts;
  const extEnd = Math.min(recordEnd, p + 2 + buf.readUInt16BE(p));
  p += 2;
  while (p + 4 <= extEnd) {
    const type = buf.readUInt16BE(p);
    const len = buf.readUInt16BE(p + 2);
    p += 4;
    const end = Math.min(p + len, extEnd);
    if (type === EXT_SERVER_NAME) facts.sni = readServerName(buf, p, end);
    else if (type === EXT_ALPN) facts.alpn = readAlpn(buf, p, end);
    p += len;
  }
  return facts;
}

function readServerName(buf: Buffer, start: number, end: number): string | null {
  let q = start + 2; // server_name_list length
  while (q + 3 <= end) {
    const nameType = buf[q]!;
    const nameLen = buf.readUInt16BE(q + 1);
    q += 3;
    if (nameType === NAME_TYPE_HOST && q + nameLen <= end && nameLen <= MAX_NAME_CHARS) {
      const name = buf.toString('latin1', q, q + nameLen);
      return /^[a-zA-Z0-9.-]+$/.test(name) ? name.toLowerCase() : null;
    }
    q += nameLen;
  }
  return null;
}

/** ProtocolNameList: a 16-bit length, then 8-bit-length-prefixed names. */
function readAlpn(buf: Buffer, start: number, end: number): string[] {
  const protocols: string[] = [];
  if (start + 2 > end) return protocols;
  const listEnd = Math.min(end, start + 2 + buf.readUInt16BE(start));
  let q = start + 2;
  while (q < listEnd && protocols.length < MAX_ALPN_PROTOCOLS) {
    const len = buf[q]!;
    q += 1;
    if (len === 0 || q + len > listEnd) break;
    protocols.push(buf.toString('latin1', q, q + len));
    q += len;
  }
  return protocols;
}
