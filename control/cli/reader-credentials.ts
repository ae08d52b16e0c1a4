import { readFileSync } from 'node:fs';
import { UsageError } from '../../command/flags.js';
import { optionalText, type SettingsOf } from '../../command/settings.js';
import { Agent, fetch as undiciFetch } from 'undici';
import type { CommandIO } from '../../command/io.js';

/**
 * How `auditmesh query` and `tail` present themselves to a collector that checks reads: a bearer
 * token (--token-file: a reader token, or a ServiceAccount token with audience auditmesh-read)
 * and the CA that signs its HTTPS certificate (--ca-file). The token file is read per command, so
 * a kubelet-rotated token is always current.
 */
export interface ReaderCredentials {
  headers: Record<string, string>;
  /** PEM of the CA bundle to trust, when given. */
  ca?: string;
}

/** The reader's flags, a group of query's and tail's settings tables. */
export const READER_SETTINGS = {
  tokenFile: optionalText({ name: 'token-file', help: 'a reader token (or a ServiceAccount token with audience auditmesh-read), sent as authorization: Bearer', env: false }),
  caFile: optionalText({ name: 'ca-file', help: "the CA bundle that signs the collector's HTTPS certificate (with workload identity on, the mesh CA: ca.crt of its --ca-dir)", env: false }),
};

/** The credentials of --token-file and --ca-file; UsageError when a file cannot be read. */
export function readerCredentials(settings: SettingsOf<typeof READER_SETTINGS>): ReaderCredentials {
  const read = (flag: string, path: string | undefined): string | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new UsageError(`--${flag}: cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const token = read('token-file', settings.tokenFile)?.trim();
  if (token === '') throw new UsageError(`--token-file: ${String(settings.tokenFile)} is empty`);
  const ca = read('ca-file', settings.caFile);
  return { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, ...(ca === undefined ? {} : { ca }) };
}

/** A refusal of the collector as a sentence that says what to do; null for other statuses. */
export function refusalAdvice(status: number, body: string): string | null {
  if (status === 401) return `the collector wants a reader credential (401: ${body.trim()}); give --token-file FILE with a reader token or a ServiceAccount token of audience auditmesh-read`;
  if (status === 403) return `the collector refused this reader (403: ${body.trim()})`;
  return null;
}

/** OpenSSL's and Node's codes for a server certificate the client does not trust. */
const UNTRUSTED_CERTIFICATE = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * Why the collector could not be read, as a sentence that says what to do, and whether it is a
 * usage problem (exit 2: the collector's certificate is not trusted, so --ca-file is missing or
 * wrong) or a failure (exit 1: unreachable).
 */
export function unreachableAdvice(err: unknown, url: URL, credentials: ReaderCredentials): { message: string; usage: boolean } {
  // fetch (undici) wraps the socket's error as `cause`; node:https gives it as is.
  const cause = ((err as { cause?: unknown })?.cause ?? err) as NodeJS.ErrnoException | undefined;
  const code = cause?.code ?? '';
  if (UNTRUSTED_CERTIFICATE.has(code)) {
    const fix = credentials.ca === undefined ? "give --ca-file FILE with the mesh CA bundle (ca.crt of the collector's --ca-dir)" : 'is --ca-file the mesh CA bundle of this collector?';
    return { message: `the collector's HTTPS certificate is not trusted (${code}: ${cause?.message}); ${fix}`, usage: true };
  }
  const why = cause?.message ?? (err as Error)?.message ?? String(err);
  const hint = url.protocol === 'http:' && ['UND_ERR_SOCKET', 'ECONNRESET'].includes(code) ? ' (a collector with workload identity on serves HTTPS: try https://)' : '';
  return { message: `cannot reach ${url.origin}: ${why}${hint}`, usage: false };
}

/**
 * GETs `url` of the collector as a reader: its body on 200, or the exit code once the problem is
 * written to stderr as `auditmesh COMMAND: ...` (2: a refusal, an untrusted certificate, a 400; 1:
 * unreachable, another status).
 */
export async function readCollector(command: string, url: URL, credentials: ReaderCredentials, io: CommandIO): Promise<{ body: string } | { exit: number }> {
  let status: number;
  let body: string;
  try {
    const { headers, ca } = credentials;
    const dispatcher = ca === undefined ? undefined : new Agent({ connect: { ca } });
    const res = await undiciFetch(url, { signal: io.signal, headers, dispatcher });
    status = res.status;
    body = await res.text();
  } catch (err) {
    const { message, usage } = unreachableAdvice(err, url, credentials);
    io.stderr.write(`auditmesh ${command}: ${message}\n`);
    return { exit: usage ? 2 : 1 };
  }
  const refused = refusalAdvice(status, body);
  if (refused !== null) {
    io.stderr.write(`auditmesh ${command}: ${refused}\n`);
    return { exit: 2 };
  }
  if (status !== 200) {
    io.stderr.write(`auditmesh ${command}: the collector answered ${status}: ${body.trim()}\n`);
    return { exit: status === 400 ? 2 : 1 };
  }
  return { body };
}
