import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { choice, flagsOf, optionalText, readSettings, whole } from '../../command/settings.js';
import { isErrorRecord } from '../collector/store/record-index.js';
import { MAX_QUERY_LIMIT, parseStatus, parseTimeBound, QueryError, type CollectedRecord } from '../collector/api/record-query.js';
import { formatRecordLine } from './format-record.js';
import { parseSpiffeId } from '../../ledger/spiffe-id.js';
import type { CommandIO } from '../../command/io.js';
import { READER_SETTINGS, readCollector, readerCredentials, type ReaderCredentials } from './reader-credentials.js';

/** The query's filters, by the /v1/records parameter each one sets (`auditmesh export` takes them too). */
export const FILTERS = {
  correlation_id: optionalText({ name: 'correlation-id', help: 'records of this request id (x-request-id), across all services', env: false }),
  trace_id: optionalText({ name: 'trace-id', help: 'records of this trace, across all services', env: false }),
  service: optionalText({ name: 'service', help: 'records where this service is either side', env: false }),
  peer: optionalText({ name: 'peer', help: 'with --service: only its exchanges with this peer', env: false }),
  identity: optionalText({ name: 'identity', help: 'records written by this proven workload identity (spiffe://TRUST_DOMAIN/ns/NS/sa/SA)', env: false }),
  since: optionalText({ name: 'since', help: 'from this long ago (10m, 2h, 7d) or this time (ISO 8601, Unix ms)', env: false }),
  until: optionalText({ name: 'until', help: 'up to this time (same forms)', env: false }),
  status: optionalText({ name: 'status', help: '5xx (a class), ok, error, or a status code such as 503', env: false }),
  namespace: optionalText({ name: 'namespace', help: 'records of these namespaces only (a,b)', env: false }),
};

const QUERY_SETTINGS = {
  collector: optionalText({ name: 'collector', help: "the collector's HTTP address, e.g. http://127.0.0.1:9401", env: 'AUDITMESH_COLLECTOR_URL' }),
  filters: FILTERS,
  limit: whole({ name: 'limit', default: 100, help: `at most this many records, newest first (up to ${MAX_QUERY_LIMIT})`, env: false }),
  output: choice<'table' | 'json'>({ name: 'output', short: 'o', choices: ['table', 'json'], default: 'table', help: 'json: one JSON record per line', env: false }),
  reader: READER_SETTINGS,
};

export const QUERY_FLAGS: readonly FlagSpec[] = flagsOf(QUERY_SETTINGS);

export const QUERY_HELP = formatHelp(
  'auditmesh query --collector URL [--correlation-id ID] [--trace-id ID] [--service NAME] [--peer NAME] [--identity SPIFFE_ID] [--since 10m|TIME] [--until TIME] [--status 5xx|ok|error|NNN] [--namespace NS] [--limit N] [--token-file FILE] [--ca-file FILE] [-o json]',
  "Searches the collector's verified records, newest first. Exit 0 when none of the records found\nis an error, 1 when one is (an error type, a 5xx, a gRPC status other than OK, a gap), 2 on bad usage\n(and when the collector refuses the credential, 401, or the reader, 403).",
  QUERY_FLAGS,
);

/** The /v1/records URL for the flags; throws UsageError for a flag the collector would refuse. */
function queryUrl(argv: readonly string[], io: CommandIO): { url: URL; json: boolean; credentials: ReaderCredentials } {
  const { values, positionals } = parseFlags(QUERY_FLAGS, argv, io.env);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const { collector, filters, limit, output, reader } = readSettings(QUERY_SETTINGS, values, io.env);
  if (collector === undefined) throw new UsageError('--collector URL is required');
  const url = new URL('/v1/records', collector.replace(/^(?!https?:\/\/)/, 'http://'));
  setFilterParams(url, filters);
  if (limit < 1 || limit > MAX_QUERY_LIMIT) throw new UsageError(`--limit: expected 1 to ${MAX_QUERY_LIMIT}, got ${limit}`);
  url.searchParams.set('limit', String(limit));
  return { url, json: output === 'json', credentials: readerCredentials(reader) };
}

/** Sets the /v1/records parameters of the filter flags on `url`; throws UsageError for one the collector would refuse. */
export function setFilterParams(url: URL, filters: Partial<Record<keyof typeof FILTERS, string | undefined>>): void {
  const now = Date.now();
  // Relative times are resolved here, so `--since 10m` means ten minutes before the command ran.
  const convert: Partial<Record<keyof typeof FILTERS, (v: string) => string>> = {
    since: (v) => String(parseTimeBound('--since', v, now)),
    until: (v) => String(parseTimeBound('--until', v, now)),
    status: (v) => (parseStatus(v), v),
    identity: (v) => {
      if (parseSpiffeId(v) === null) throw new QueryError(`--identity: expected a workload SPIFFE ID, spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT, got ${JSON.stringify(v)}`);
      return v;
    },
  };
  try {
    for (const [param, v] of Object.entries(filters) as [keyof typeof FILTERS, string | undefined][]) {
      if (v !== undefined) url.searchParams.set(param, convert[param]?.(v) ?? v);
    }
  } catch (err) {
    if (err instanceof QueryError) throw new UsageError(err.message.replace(/^status:/, '--status:'));
    throw err;
  }
}

/** `auditmesh query`: exit 0 no error record found, 1 an error record found (or the collector failed), 2 bad usage. */
export async function queryMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(QUERY_HELP);
    return 0;
  }
  let args;
  try {
    args = queryUrl(argv, io);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh query: ${err.message}\n(see auditmesh query --help)\n`);
    return 2;
  }
  const answer = await readCollector('query', args.url, args.credentials, io);
  if ('exit' in answer) return answer.exit;
  const { body } = answer;
  const records = body
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as CollectedRecord);
  for (const rec of records) io.stdout.write((args.json ? JSON.stringify(rec) : formatRecordLine(rec)) + '\n');
  const errors = records.filter((r) => isErrorRecord(r)).length;
  if (!args.json) io.stderr.write(`${records.length} records, newest first${errors > 0 ? `; ${errors} errors` : ''}\n`);
  return errors > 0 ? 1 : 0;
}
