import { readFileSync } from 'node:fs';
import { UsageError } from '../../command/flags.js';
import { optionalText, type SettingsOf } from '../../command/settings.js';

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
  caFile: optionalText({ name: 'ca-file', help: "the CA bundle that signs the collector's HTTPS certificate", env: false }),
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
