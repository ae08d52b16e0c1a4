import http from 'node:http';
import https from 'node:https';
import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { choice, flag, flagsOf, optionalText, readSettings } from '../../command/settings.js';
import type { CommandIO } from '../../command/io.js';
import type { CollectedRecord } from '../collector/api/record-query.js';
import { followSse } from './tail.js';
import { READER_SETTINGS, readerCredentials, type ReaderCredentials } from './reader-credentials.js';

/**
 * `auditmesh export --follow --collector URL -o json`: every record the collector stores, as one
 * JSON object a line on stdout, for log shippers (Fluent Bit, Vector, Filebeat) that read a
 * command's output. It follows the live tail (/v1/tail); when the stream breaks it reconnects with
 * a growing pause and first fetches what was stored meanwhile (/v1/records since the last record
 * it printed, a little before), printing only records it has not printed yet, oldest first. A
 * break longer than /v1/records answers (MAX_CATCH_UP records) can still miss records: the OTLP
 * export (collector --export-otlp) is the path that never does.
 */

const FOLLOW_SETTINGS = {
  follow: flag({ name: 'follow', help: 'stream the records the collector stores, as they are stored', env: false }),
  collector: optionalText({ name: 'collector', help: "the collector's HTTP address, e.g. http://127.0.0.1:9401", env: false }),
  output: choice<'json'>({ name: 'output', short: 'o', choices: ['json'], default: 'json', help: 'json: one JSON record per line (newline-delimited JSON)', env: false }),
  reader: READER_SETTINGS,
};
const FOLLOW_FLAGS: readonly FlagSpec[] = flagsOf(FOLLOW_SETTINGS);

export const EXPORT_FOLLOW_HELP = formatHelp(
  'auditmesh export --follow --collector URL [--token-file FILE] [--ca-file FILE] [-o json]',
  "Prints every record the collector stores from now on, one JSON object a line, until interrupted:\nfor log shippers. Reconnects by itself, and catches up on what was stored while it was away.\nExit 2 when the collector refuses the reader (401, 403).",
  FOLLOW_FLAGS,
);

/** The most records one catch-up after a break fetches (/v1/records' own bound). */
export const MAX_CATCH_UP = 10_000;
/** Records remembered as printed, so a catch-up does not print them twice. */
const REMEMBERED = 200_000;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 15_000;
/** A catch-up starts this long before the last record printed: records of other sidecars may have started earlier and been stored later. */
const CATCH_UP_MARGIN_MS = 60_000;

export async function exportFollowMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(EXPORT_FOLLOW_HELP);
    return 0;
  }
  let base: URL;
  let credentials: ReaderCredentials;
  try {
    const values = readSettings(FOLLOW_SETTINGS, parseFlags(FOLLOW_FLAGS, argv, io.env).values, io.env);
    if (!values.follow) throw new UsageError('this build writes records with --follow (NDJSON to stdout); give --follow');
    if (values.collector === undefined) throw new UsageError('give --collector URL');
    base = new URL(values.collector.replace(/^(?!https?:\/\/)/, 'http://'));
    credentials = readerCredentials(values.reader);
  } catch (err) {
    io.stderr.write(`auditmesh export: ${(err as Error).message}\n`);
    return 2;
  }
  return follow(base, io, credentials);
}

async function follow(base: URL, io: CommandIO, credentials: ReaderCredentials): Promise<number> {
  const printed = new Set<string>();
  let lastStartMs: number | undefined;
  const print = (rec: CollectedRecord): void => {
    const id = `${rec['audit.sidecar_id']}:${rec['audit.seq']}`;
    if (printed.has(id)) return;
    printed.add(id);
    // A Set iterates in insertion order: the oldest ids go first.
    if (printed.size > REMEMBERED) printed.delete(printed.values().next().value!);
    if (typeof rec['audit.start_unix_ms'] === 'number') lastStartMs = Math.max(lastStartMs ?? 0, rec['audit.start_unix_ms']);
    io.stdout.write(JSON.stringify(rec) + '\n');
  };
  let pauseMs = RECONNECT_MIN_MS;
  for (let first = true; !io.signal.aborted; first = false) {
    if (!first && lastStartMs !== undefined) {
      const caught = await catchUp(base, lastStartMs - CATCH_UP_MARGIN_MS, credentials, io).catch((err: unknown) => {
        io.stderr.write(`auditmesh export: could not catch up on records stored while disconnected: ${(err as Error).message}\n`);
        return [];
      });
      for (const rec of caught) print(rec);
    }
    const started = Date.now();
    const code = await followSse(new URL('/v1/tail', base), io, (data) => print(JSON.parse(data) as CollectedRecord), credentials);
    if (code === 2 || io.signal.aborted) return code;
    // A stream that lasted starts the pause afresh.
    if (Date.now() - started > RECONNECT_MAX_MS) pauseMs = RECONNECT_MIN_MS;
    io.stderr.write(`auditmesh export: the tail of ${base.origin} ended; reconnecting in ${pauseMs} ms\n`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, pauseMs);
      io.signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
    });
    pauseMs = Math.min(pauseMs * 2, RECONNECT_MAX_MS);
  }
  return 0;
}

/** The records stored since `sinceMs`, oldest first. */
function catchUp(base: URL, sinceMs: number, credentials: ReaderCredentials, io: CommandIO): Promise<CollectedRecord[]> {
  const url = new URL(`/v1/records?since=${Math.floor(sinceMs)}&limit=${MAX_CATCH_UP}`, base);
  const get = url.protocol === 'https:' ? https.get : http.get;
  return new Promise((resolve, reject) => {
    const req = get(url, { signal: io.signal, headers: credentials.headers, ca: credentials.ca }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('error', reject);
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`${url.pathname} answered ${res.statusCode}: ${body.trim().slice(0, 200)}`));
        // Newest first on the wire: printed oldest first.
        resolve(body.split('\n').filter(Boolean).map((l) => JSON.parse(l) as CollectedRecord).reverse());
      });
    });
    req.on('error', reject);
  });
}
