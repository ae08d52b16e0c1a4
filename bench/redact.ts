// What redacting a request's path, query and headers costs on the event loop (issue 30): the
// record of one HTTP request built with the sidecar's redactor, against the same record built
// with a redactor that changes nothing, in the same run. `node --import=tsx bench/redact.ts`;
// ITERATIONS (200000) per round, ROUNDS (5), the median of CPU time shown.
import { createRedactor, type Redactor } from '../proxy/audit/redact.js';
import { httpRequestRecord, type HttpRequestFacts } from '../proxy/audit/http-record.js';

const ITERATIONS = Number(process.env.ITERATIONS ?? 200_000);
const ROUNDS = Number(process.env.ROUNDS ?? 5);

const INPUTS: Array<[string, string]> = [
  ['short path, no query', '/healthz'],
  ['REST path with ids, no query', '/api/v1/users/550e8400-e29b-41d4-a716-446655440000/orders/12345'],
  ['typical path + query', '/api/v1/orders?page=2&per_page=50&sort=created_at&status=open&customer_id=98765'],
  ['gRPC method', '/inventory.v1.InventoryService/GetStockLevels'],
  ['path + query with secrets', '/oauth/callback?code=4f1d2e8a&state=xyz&access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln'],
  ['presigned S3 URL', '/bucket/reports/2024/q3.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404'],
];

const HEADERS = { host: 'orders.shop.svc:8080', 'user-agent': 'okhttp/4.12.0', accept: 'application/json', authorization: 'Bearer abc', 'x-forwarded-for': '10.1.2.3' };

function facts(path: string): HttpRequestFacts {
  return {
    kind: 'http', direction: 'inbound', service: 'orders', peer: undefined, protocolVersion: '1.1', clientAddress: '10.1.2.3', clientPort: 40000,
    method: 'GET', scheme: 'http', path, headers: HEADERS, route: null, correlation: { traceId: 't', spanId: 's', traceparent: 'p', requestId: 'r' },
  };
}

/** A redactor that changes nothing: what building the record costs without redaction. */
const NOOP = { fingerprint: (s: string) => s, headers: () => ({}), query: (s: string) => s, path: (s: string) => s, text: (s: string) => s, target: (s: string) => ({ path: s }) } as unknown as Redactor;

function nsPerOp(f: HttpRequestFacts, redactor: Redactor): number {
  const samples: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // CPU time, not wall time: on a shared machine the wait for a core is not the redactor's cost.
    const t0 = process.cpuUsage();
    for (let i = 0; i < ITERATIONS; i++) httpRequestRecord(f, redactor);
    const used = process.cpuUsage(t0);
    samples.push(((used.user + used.system) * 1000) / ITERATIONS);
  }
  return samples.sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;
}

const redactor = createRedactor({ key: Buffer.alloc(32, 7), secretPaths: ['/hooks/{secret}', '/users/*/reset/{secret}'] });
const rows = INPUTS.map(([what, path]) => {
  const f = facts(path);
  nsPerOp(f, redactor); // warm-up
  const base = nsPerOp(f, NOOP);
  const redacted = nsPerOp(f, redactor);
  return [what, String(path.length), base.toFixed(0), redacted.toFixed(0), (redacted - base).toFixed(0)];
});
const head = ['input', 'chars', 'record, no redaction (ns)', 'record, redacted (ns)', 'redaction (ns)'];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
for (const row of [head, ...rows]) console.log(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
