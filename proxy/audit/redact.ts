import { createHmac } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
// Headers and query parameters whose values are secrets (never stored, logged or labelled in clear), unless configured.
import { DEFAULT_SECRET_HEADERS, DEFAULT_SECRET_PARAMS } from '../config.js';
/** Non-secret headers worth keeping in a record (bounded: anything else is not recorded at all). */
export const DEFAULT_RECORDED_HEADERS = ['host', 'user-agent', 'content-type', 'accept', 'x-forwarded-for', 'grpc-timeout'];

const MAX_HEADER_VALUE_CHARS = 256;
const MAX_REMEMBERED_FINGERPRINTS = 1024;

export interface RedactorOptions {
  /** HMAC key: the same key across sidecars makes equal secrets match in the store. */
  key: Buffer;
  secretHeaders?: readonly string[];
  secretParams?: readonly string[];
  recordedHeaders?: readonly string[];
}

/** Turns headers and query strings into their recordable form: secrets become keyed fingerprints. */
export interface Redactor {
  fingerprint(secret: string): string;
  headers(headers: IncomingHttpHeaders | OutgoingHttpHeaders): Record<string, string>;
  query(search: string): string;
}

export function createRedactor(opts: RedactorOptions): Redactor {
  const secretHeaders = new Set((opts.secretHeaders ?? DEFAULT_SECRET_HEADERS).map((h) => h.toLowerCase()));
  const secretParams = new Set((opts.secretParams ?? DEFAULT_SECRET_PARAMS).map((p) => p.toLowerCase()));
  const recorded = [...new Set([...(opts.recordedHeaders ?? DEFAULT_RECORDED_HEADERS), ...secretHeaders].map((h) => h.toLowerCase()))];
  // The same credentials come back request after request: remember recent fingerprints rather
  // than computing an HMAC per request. Bounded, and only ever holding values already hashed.
  const recent = new Map<string, string>();
  const fingerprint = (secret: string): string => {
    const known = recent.get(secret);
    if (known !== undefined) return known;
    // A truncated HMAC: enough to match equal secrets, useless to recover them without the key.
    const value = 'hmac-sha256:' + createHmac('sha256', opts.key).update(secret).digest('hex').slice(0, 32);
    if (recent.size >= MAX_REMEMBERED_FINGERPRINTS) recent.delete(recent.keys().next().value!);
    recent.set(secret, value);
    return value;
  };

  return {
    fingerprint,
    headers(headers) {
      const out: Record<string, string> = {};
      for (const name of recorded) {
        const value = headers[name];
        if (value === undefined) continue;
        const text = Array.isArray(value) ? value.join(', ') : String(value);
        out[name] = secretHeaders.has(name) ? fingerprint(text) : text.slice(0, MAX_HEADER_VALUE_CHARS);
      }
      return out;
    },
    query(search) {
      if (search === '' || search === '?') return '';
      const body = search.startsWith('?') ? search.slice(1) : search;
      return body
        .split('&')
        .map((pair) => {
          const eq = pair.indexOf('=');
          const rawName = eq === -1 ? pair : pair.slice(0, eq);
          let name: string;
          try {
            name = decodeURIComponent(rawName.replace(/\+/g, ' ')).toLowerCase();
          } catch {
            name = rawName.toLowerCase();
          }
          if (eq === -1 || !secretParams.has(name)) return pair;
          return `${rawName}=${fingerprint(pair.slice(eq + 1))}`;
        })
        .join('&');
    },
  };
}
