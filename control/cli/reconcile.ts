import { formatHelp, parseFlags, UsageError, type FlagSpec } from '../../command/flags.js';
import { choice, flagsOf, optionalText, readSettings } from '../../command/settings.js';
import type { CommandIO } from '../../command/io.js';
import { parseTimeBound, QueryError } from '../collector/api/record-query.js';
import { DISAGREEING_STATES, RECONCILE_STATES, type ReconciledCall, type ReconcileState, type ReportedEnd } from '../collector/reconcile/reconciled-call.js';
import { READER_SETTINGS, readCollector, readerCredentials, type ReaderCredentials } from './reader-credentials.js';

const RECONCILE_SETTINGS = {
  collector: optionalText({ name: 'collector', help: "the collector's HTTP address, e.g. http://127.0.0.1:9401", env: 'AUDITMESH_COLLECTOR_URL' }),
  service: optionalText({ name: 'service', help: 'calls where this service is the caller or the callee', env: false }),
  since: optionalText({ name: 'since', help: 'calls started from this long ago (10m, 2h, 7d) or this time (ISO 8601, Unix ms)', env: false }),
  state: optionalText({ name: 'state', help: `calls in this state only: ${RECONCILE_STATES.join(', ')}`, env: false }),
  output: choice<'table' | 'json'>({ name: 'output', short: 'o', choices: ['table', 'json'], default: 'table', help: 'json: one JSON object per call', env: false }),
  reader: READER_SETTINGS,
};

export const RECONCILE_FLAGS: readonly FlagSpec[] = flagsOf(RECONCILE_SETTINGS);

export const RECONCILE_HELP = formatHelp(
  `auditmesh reconcile --collector URL [--service NAME] [--since 10m] [--state ${RECONCILE_STATES.join('|')}] [--token-file FILE] [--ca-file FILE] [-o json]`,
  "Which calls the two ends disagree on: the collector pairs each caller's outbound record with the\ncallee's inbound record of the same call. Exit 0 when none disagrees, 1 when a call is caller-only,\ncallee-only or mismatched (pending calls, still inside the collector's --reconcile-grace, never\ncount), 2 on bad usage.",
  RECONCILE_FLAGS,
);

function reconcileUrl(argv: readonly string[], io: CommandIO): { url: URL; json: boolean; credentials: ReaderCredentials } {
  const { values, positionals } = parseFlags(RECONCILE_FLAGS, argv, io.env);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const { collector, service, since, state, output, reader } = readSettings(RECONCILE_SETTINGS, values, io.env);
  if (collector === undefined) throw new UsageError('--collector URL is required');
  const url = new URL('/v1/reconciliation', collector.replace(/^(?!https?:\/\/)/, 'http://'));
  if (service !== undefined) url.searchParams.set('service', service);
  if (state !== undefined) {
    if (!(RECONCILE_STATES as readonly string[]).includes(state)) throw new UsageError(`--state: expected one of ${RECONCILE_STATES.join(', ')}, got ${JSON.stringify(state)}`);
    url.searchParams.set('state', state);
  }
  if (since !== undefined) {
    try {
      // Resolved here, so `--since 10m` means ten minutes before the command ran.
      url.searchParams.set('since', String(parseTimeBound('--since', since, Date.now())));
    } catch (err) {
      if (err instanceof QueryError) throw new UsageError(err.message);
      throw err;
    }
  }
  return { url, json: output === 'json', credentials: readerCredentials(reader) };
}

/** `auditmesh reconcile`: exit 0 every call agrees (or is pending, or external), 1 one disagrees or the collector failed, 2 bad usage. */
export async function reconcileMain(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(RECONCILE_HELP);
    return 0;
  }
  let args;
  try {
    args = reconcileUrl(argv, io);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`auditmesh reconcile: ${err.message}\n(see auditmesh reconcile --help)\n`);
    return 2;
  }
  const answer = await readCollector('reconcile', args.url, args.credentials, io);
  if ('exit' in answer) return answer.exit;
  const calls = answer.body
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as ReconciledCall);
  if (args.json) for (const call of calls) io.stdout.write(JSON.stringify(call) + '\n');
  else if (calls.length > 0) io.stdout.write(formatTable(['STATE', 'CALL', 'CALLER', 'CALLEE', 'DIFFERS', 'STARTED'], calls.map(tableRow)));
  const counts = new Map<ReconcileState, number>();
  for (const c of calls) counts.set(c.state, (counts.get(c.state) ?? 0) + 1);
  const disagreeing = calls.filter((c) => DISAGREEING_STATES.has(c.state)).length;
  if (!args.json) io.stderr.write(`${calls.length} calls${counts.size > 0 ? ': ' + Array.from(counts, ([s, n]) => `${n} ${s}`).join(', ') : ''}\n`);
  return disagreeing > 0 ? 1 : 0;
}

function tableRow(c: ReconciledCall): string[] {
  const what = c.kind === 'grpc' ? `${c['rpc.service']}/${c['rpc.method']}` : `${c['http.request.method']} ${c['url.path']}`;
  const end = (service: string, e: ReportedEnd | undefined): string => `${service}${e === undefined ? ' (no record)' : ` ${e['audit.sidecar_id']}:${e['audit.seq']}`}`;
  const differs = (c.differs ?? []).map((d) => `${d.field} ${JSON.stringify(d.caller)}≠${JSON.stringify(d.callee)}`).join('; ');
  return [c.state, what, end(c.caller_service, c.caller), end(c.callee_service, c.callee), differs, new Date(c.start_unix_ms).toISOString()];
}

/** Columns padded to their widest cell, one line a row. */
function formatTable(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd() + '\n').join('');
}
