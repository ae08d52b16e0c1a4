import { createHmac } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { DEFAULT_SECRET_HEADERS } from '../config.js';
import { compileSecretParams, DEFAULT_SECRET_PARAMS } from './secret-params.js';
import { parseSecretPaths, redactSecretPaths } from './secret-paths.js';
import { MIN_SCAN_CHARS, redactTokens } from './secret-values.js';
/** Non-secret headers worth keeping in a record (bounded: anything else is not recorded at all). */
export const DEFAULT_RECORDED_HEADERS = ['host', 'user-agent', 'content-type', 'accept', 'x-forwarded-for', 'grpc-timeout'];

const MAX_HEADER_VALUE_CHARS = 256;
const MAX_REMEMBERED_FINGERPRINTS = 1024;

export interface RedactorOptions {
  /** HMAC key: the same key across sidecars makes equal secrets match in the store. */
  key: Buffer;
  secretHeaders?: readonly string[];
  /** Name patterns in effect (secret-params.ts), defaults included. */
  secretParams?: readonly string[];
  /** Path templates with `{secret}` segments (secret-paths.ts). */
  secretPaths?: readonly string[];
  recordedHeaders?: readonly string[];
}

/** Turns headers and query strings into their recordable form: secrets become keyed fingerprints. */
export interface Redactor {
  fingerprint(secret: string): string;
  headers(headers: IncomingHttpHeaders | OutgoingHttpHeaders): Record<string, string>;
  /** A query string: values of secret-named parameters and credential-shaped values fingerprinted. */
  query(search: string): string;
  /** A path (origin-form, or absolute-form with its userinfo): secret segments and credential-shaped tokens fingerprinted. */
  path(path: string): string;
  /** Free text from a peer (a header value, a gRPC status message): credential-shaped tokens fingerprinted. */
  text(value: string): string;
  /** A request target split into its recordable path and query (undefined when it has none). */
  target(target: string): { path: string; query?: string };
}

export function createRedactor(opts: RedactorOptions): Redactor {
  const secretHeaders = new Set((opts.secretHeaders ?? DEFAULT_SECRET_HEADERS).map((h) => h.toLowerCase()));
  const secretName = compileSecretParams(opts.secretParams ?? DEFAULT_SECRET_PARAMS);
  const templates = parseSecretPaths(opts.secretPaths ?? []);
  const recorded = [...new Set([...(opts.recordedHeaders ?? DEFAULT_RECORDED_HEADERS), ...secretHeaders].map((h) => h.toLowerCase()))];
  const fingerprint = createFingerprint(opts.key);

  const query = (search: string): string => {
    if (search === '' || search === '?') return '';
    const body = search.startsWith('?') ? search.slice(1) : search;
    return body.split('&').map((pair) => redactPair(pair, secretName, fingerprint)).join('&');
  };
  // A peer's free text may quote a URL (`unknown method /a?sig=…`): its secret-named pairs too.
  const text = (value: string): string => {
    const pairs = value.includes('=') ? value.replace(NAME_VALUE, (pair) => redactPair(pair, secretName, fingerprint)) : value;
    return pairs.length < MIN_SCAN_CHARS ? pairs : redactTokens(pairs, fingerprint, false);
  };
  const path = (target: string): string => {
    const absolute = target.startsWith('/') ? null : ABSOLUTE_FORM.exec(target);
    if (absolute === null) return text(redactSecretPaths(target, templates, fingerprint));
    const [prefix, scheme, authority] = absolute as unknown as [string, string, string];
    const rest = target.slice(prefix.length);
    return scheme + withoutUserinfo(authority, fingerprint) + (rest === '' ? '' : path(rest));
  };

  return {
    fingerprint,
    headers(headers) {
      const out: Record<string, string> = {};
      for (const name of recorded) {
        const value = headers[name];
        if (value === undefined) continue;
        const joined = Array.isArray(value) ? value.join(', ') : String(value);
        if (secretHeaders.has(name)) out[name] = fingerprint(joined);
        else out[name] = text(name === 'host' ? withoutUserinfo(joined, fingerprint) : joined).slice(0, MAX_HEADER_VALUE_CHARS);
      }
      return out;
    },
    query,
    path,
    text,
    target(target) {
      const q = queryStart(target);
      return q === -1 ? { path: path(target) } : { path: path(target.slice(0, q)), query: query(target.slice(q + 1)) };
    },
  };
}

/**
 * HMAC fingerprints, remembered: the same credentials come back request after request. Bounded,
 * and only ever holding values already hashed.
 */
function createFingerprint(key: Buffer): (secret: string) => string {
  const recent = new Map<string, string>();
  return (secret) => {
    const known = recent.get(secret);
    if (known !== undefined) return known;
    // A truncated HMAC: enough to match equal secrets, useless to recover them without the key.
    const value = 'hmac-sha256:' + createHmac('sha256', key).update(secret).digest('hex').slice(0, 32);
    if (recent.size >= MAX_REMEMBERED_FINGERPRINTS) recent.delete(recent.keys().next().value!);
    recent.set(secret, value);
    return value;
  };
}

/** Where a target's query starts, -1 when it has none. In absolute form after the userinfo: a `?` in a password is not one. */
function queryStart(target: string): number {
  const absolute = target.startsWith('/') ? null : ABSOLUTE_FORM.exec(target);
  return target.indexOf('?', absolute === null ? 0 : absolute[1]!.length + absolute[2]!.lastIndexOf('@') + 1);
}

/** A `name=value` pair inside free text: the name as query names are written, the value up to a separator. */
const NAME_VALUE = /[\w.\-[\]%]+=[^\s&;,"']*/g;

/** `scheme://authority` of an absolute-form target (RFC 9112 §3.2.2). */
const ABSOLUTE_FORM = /^([a-z][a-z0-9+.-]*:\/\/)([^/]*)/i;

/** An authority with any `user:password@` fingerprinted: RFC 9110 §4.2.4 deprecates it, clients still send it. */
function withoutUserinfo(authority: string, fingerprint: (secret: string) => string): string {
  const at = authority.lastIndexOf('@');
  return at === -1 ? authority : fingerprint(authority.slice(0, at)) + authority.slice(at);
}

function redactPair(pair: string, secretName: (name: string) => boolean, fingerprint: (secret: string) => string): string {
  const eq = pair.indexOf('=');
  if (eq === -1) return redactTokens(pair, fingerprint, true);
  const rawName = pair.slice(0, eq);
  let name = rawName;
  if (rawName.includes('%') || rawName.includes('+')) {
    try {
      name = decodeURIComponent(rawName.replace(/\+/g, ' '));
    } catch {
      // Malformed escapes: matched as sent.
    }
  }
  if (secretName(name)) return `${rawName}=${fingerprint(pair.slice(eq + 1))}`;
  const value = pair.slice(eq + 1);
  const redacted = redactTokens(value, fingerprint, true);
  return redacted === value ? pair : `${rawName}=${redacted}`;
}
