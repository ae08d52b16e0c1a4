import http from 'node:http';
import https from 'node:https';
import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { choice, flagsOf, optionalText, readSettings } from '../../command/settings.js';
import type { JournalRecord } from '../../ledger/record.js';
import { formatRecordLine } from './format-record.js';
import { takeSseEvents } from './sse.js';
import type { CommandIO } from '../../command/io.js';
import { READER_SETTINGS, readerCredentials, refusalAdvice, unreachableAdvice, type ReaderCredentials } from './reader-credentials.js';

const TAIL_SETTINGS = {
  admin: optionalText({ name: 'admin', help: "a sidecar's admin address, e.g. http://127.0.0.1:15020", env: false }),
  collector: optionalText({ name: 'collector', help: "the collector's HTTP address, e.g. http://127.0.0.1:9401: every sidecar's records as the collector stores them", env: false }),
  output: choice<'table' | 'json'>({ name: 'output', short: 'o', choices: ['table', 'json'], default: 'table', help: 'json: one JSON record per line', env: false }),
  reader: READER_SETTINGS,
};
const TAIL_FLAGS: readonly FlagSpec[] = flagsOf(TAIL_SETTINGS);

export const TAIL_HELP = formatHelp(
  'auditmesh tail (--admin URL | --collector URL) [--token-file FILE] [--ca-file FILE] [-o json]',
  "Streams audit records live, until interrupted: from one sidecar as it commits them (--admin, on\nloopback: kubectl port-forward), or from the fleet as the collector verifies and stores them\n(--collector; the namespaces the reader may read). Exit 2 when the collector refuses (401, 403).",
  TAIL_FLAGS,
);

/** `auditmesh tail`: follows a sidecar's /tail or the collector's /v1/tail server-sent events and prints each record. */
export async function tailMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(TAIL_HELP);
    return 0;
  }
  let url: URL;
  let json: boolean;
  let credentials: ReaderCredentials;
  try {
    const values = readSettings(TAIL_SETTINGS, parseFlags(TAIL_FLAGS, argv, io.env).values, io.env);
    if ((values.admin === undefined) === (values.collector === undefined)) throw new UsageError('give one of --admin URL (a sidecar) or --collector URL');
    const [path, base] = values.admin !== undefined ? ['/tail', values.admin] : ['/v1/tail', values.collector];
    url = new URL(path, base!.replace(/^(?!https?:\/\/)/, 'http://'));
    json = values.output === 'json';
    credentials = readerCredentials(values.reader);
  } catch (err) {
    io.stderr.write(`auditmesh tail: ${(err as Error).message}\n`);
    return 2;
  }
  return followSse(
    url,
    io,
    (data) => {
      const rec = JSON.parse(data) as JournalRecord;
      io.stdout.write((json ? JSON.stringify(rec) : formatRecordLine(rec)) + '\n');
    },
    credentials,
  );
}

/** Reads a server-sent event stream until it ends or the signal aborts; 0 on a clean stop, 1 on failure, 2 refused (401, 403). */
export function followSse(url: URL, io: CommandIO, onData: (data: string) => void, credentials: ReaderCredentials = { headers: {} }): Promise<number> {
  return new Promise((resolve) => {
    const get = url.protocol === 'https:' ? https.get : http.get;
    const req = get(url, { signal: io.signal, headers: credentials.headers, ca: credentials.ca }, (res) => {
      if (res.statusCode === 401 || res.statusCode === 403) {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('error', () => resolve(2));
        res.on('end', () => {
          io.stderr.write(`auditmesh tail: ${refusalAdvice(res.statusCode!, body)}\n`);
          resolve(2);
        });
        return;
      }
      if (res.statusCode !== 200) {
        io.stderr.write(`auditmesh tail: ${url.href} answered ${res.statusCode}\n`);
        res.resume();
        resolve(1);
        return;
      }
      res.setEncoding('utf8');
      let buffer = '';
      res.on('data', (chunk: string) => {
        const { data, rest } = takeSseEvents(buffer + chunk);
        buffer = rest;
        for (const d of data) onData(d);
      });
      res.on('end', () => resolve(io.signal.aborted ? 0 : 1));
      res.on('error', () => resolve(io.signal.aborted ? 0 : 1));
    });
    req.on('error', (err) => {
      if (io.signal.aborted) return resolve(0);
      const { message, usage } = unreachableAdvice(err, url, credentials);
      io.stderr.write(`auditmesh tail: ${message}\n`);
      resolve(usage ? 2 : 1);
    });
  });
}
