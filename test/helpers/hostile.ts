import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import type { SidecarConfig } from '../../proxy/config.js';
import { createLogger } from '../../command/log.js';
import type { JournalRecord } from '../../ledger/record.js';
import { request, startUpstream } from './net.js';
import { followTail, scrape, startTestSidecar } from './sidecar.js';
import { echoClient, startEchoServer, unary } from './grpc.js';
import { verifyDir } from './journal.js';

/**
 * The adversarial suite's one harness. Every hostile case plants SECRET in its input (as a
 * credential: authorization, cookie, a token parameter) and ends with assertSound(), which checks
 * the three things issue 8 asks of each case: the sidecar still serves a normal request, the
 * journal still verifies, and the secret is nowhere in clear (journal files, logs, /metrics, the
 * live tail).
 */
export const SECRET = 'hostile-s3cr3t-7c41d9';

/**
 * Secrets a hostile request carries in its URL, where only issue 30's rules catch them: a path
 * segment shaped like a token and userinfo. Checked by assertSound like SECRET.
 */
export const HOSTILE_URL_SECRETS = ['7kQ2mZ9xR4tB8wN3pL6vC1jH5dF0gS2y', 'hostile-userinfo-pw-91e3'] as const;

/** Request targets carrying every planted secret at once, by name, by shape and as userinfo. */
export const SECRET_PATHS = {
  /** Origin-form: SECRET by name (a presigned URL's signature), the token-shaped one as a path segment. */
  origin: `/files/${HOSTILE_URL_SECRETS[0]}/get?X-Amz-Signature=${SECRET}&client_secret=${SECRET}`,
  /** Absolute-form with userinfo: unroutable, still recorded. */
  absolute: (port: number) => `http://admin:${HOSTILE_URL_SECRETS[1]}@127.0.0.1:${port}/x?session_id=${SECRET}`,
} as const;

/** Credentials carrying SECRET, for the hostile request's headers. */
export const SECRET_HEADERS = { authorization: `Bearer ${SECRET}`, cookie: `sid=${SECRET}` } as const;

export interface Hostile {
  sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
  /** Structured log lines the sidecar wrote. */
  logs: string[];
  tail: Awaited<ReturnType<typeof followTail>>;
  /** The upstream's port: an HTTP/1.1 app or a gRPC Echo server. */
  upstreamPort: number;
  /** Sends the normal request the sidecar must still serve, and waits for its record. */
  probe: () => Promise<void>;
}

export type UpstreamKind = 'http' | 'grpc' | { port: number; kind: 'http' | 'grpc' };

/**
 * A sidecar (logs captured at info) in front of a well-behaved upstream by default, or of the
 * port given (a hostile upstream), with its live tail followed.
 */
export async function startHostile(t: ExecutionContext, upstream: UpstreamKind = 'http', overrides: Partial<SidecarConfig> = {}): Promise<Hostile> {
  let port: number;
  let kind: 'http' | 'grpc';
  if (typeof upstream === 'object') {
    ({ port, kind } = upstream);
  } else if (upstream === 'http') {
    const app = await startUpstream();
    t.teardown(app.close);
    [port, kind] = [app.port, 'http'];
  } else {
    [port, kind] = [(await startEchoServer(t)).port, 'grpc'];
  }
  const logs: string[] = [];
  const sidecar = await startTestSidecar(t, { appPort: port, logLevel: 'info', ...overrides }, createLogger('info', (line) => logs.push(line)));
  const tail = await followTail(t, sidecar.ports.admin);
  const inbound = sidecar.ports.inbound!;
  const probe = async (): Promise<void> => {
    const id = `probe-${randomUUID()}`;
    if (kind === 'http') {
      const reply = await request(inbound, { path: '/still-serving', headers: { 'x-request-id': id } });
      if (reply.status !== 200) throw new Error(`the normal request got ${reply.status}: ${reply.body.toString()}`);
    } else {
      const { reply, error } = await unary(echoClient(t, inbound), { text: 'still serving' }, { metadata: metadataWith(id) });
      if (error !== undefined || reply?.text !== 'still serving') throw new Error(`the normal call failed: ${error?.message}`);
    }
    await tail.next((r) => r['audit.request_id'] === id && r['audit.phase'] === 'final', 45_000);
  };
  return { sidecar, logs, tail, upstreamPort: port, probe };
}

function metadataWith(requestId: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('x-request-id', requestId);
  return metadata;
}

/** Every file under dir, recursively. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  return out;
}

/** The forms a planted secret could take in bytes: as sent, URL-encoded, UTF-16. */
function secretForms(secret: string): Buffer[] {
  return [Buffer.from(secret), Buffer.from(encodeURIComponent(secret)), Buffer.from(secret, 'utf16le')];
}

/**
 * The end of every hostile case: a normal request is still served and recorded, the journal
 * verifies (after the sidecar has closed and committed everything), and SECRET is in none of the
 * journal's files, the logs, /metrics or the tail. Closes the sidecar.
 */
export async function assertSound(t: ExecutionContext, h: Hostile): Promise<void> {
  await h.probe();
  const metrics = await scrape(h.sidecar.ports.admin);
  await h.sidecar.close();
  await assertJournalSound(t, h.sidecar.config.journalDir, { logs: h.logs.join(''), '/metrics': metrics, tail: JSON.stringify(h.tail.records) });
}

/**
 * The journal half of assertSound, for a sidecar that has stopped (or was killed): it verifies,
 * and SECRET is in none of its files nor in any of the texts given (logs, metrics), named by key.
 */
export async function assertJournalSound(t: ExecutionContext, journalDir: string, texts: Record<string, string>): Promise<void> {
  const report = await verifyDir(journalDir);
  t.true(report.ok, `journal does not verify: ${report.failure?.problem}`);
  t.deepEqual(await leaksOf([SECRET, ...HOSTILE_URL_SECRETS], [journalDir], texts), [], 'the planted secret appears in clear');
}

/**
 * Where any of `secrets` appears in clear: the raw bytes of every file under `dirs` (as sent,
 * URL-encoded, UTF-16) and the texts given (logs, metrics, tail, query output), named by key.
 */
export async function leaksOf(secrets: readonly string[], dirs: readonly string[], texts: Record<string, string>): Promise<string[]> {
  const leaks: string[] = [];
  for (const dir of dirs) {
    for (const file of await filesUnder(dir)) {
      const bytes = await readFile(file);
      for (const secret of secrets) if (secretForms(secret).some((form) => bytes.includes(form))) leaks.push(`${secret} in ${file}`);
    }
  }
  for (const [name, text] of Object.entries(texts)) for (const secret of secrets) if (secretForms(secret).some((form) => text.includes(form.toString()))) leaks.push(`${secret} in ${name}`);
  return leaks;
}

/** The first record matching pred, from the live tail. */
export function recordOf(h: Hostile, pred: (r: JournalRecord) => boolean, timeoutMs = 45_000): Promise<JournalRecord> {
  // Generous: the suite shares two cores with every other test file.
  return h.tail.next(pred, timeoutMs);
}
