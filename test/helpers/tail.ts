import http from 'node:http';
import https from 'node:https';
import type { ExecutionContext } from 'ava';
import { takeSseEvents } from '../../control/cli/sse.js';

/**
 * Follows a collector's /v1/tail with a reader `token`; the records streamed land in the returned
 * array as they arrive. An https:// collector (one with a mesh CA) is followed trusting `caPem`.
 */
export async function followTail(t: ExecutionContext, httpUrl: string, token: string, caPem?: string): Promise<Record<string, unknown>[]> {
  const seen: Record<string, unknown>[] = [];
  const controller = new AbortController();
  t.teardown(() => controller.abort());
  await new Promise<void>((resolve, reject) => {
    const onResponse = (res: http.IncomingMessage): void => {
      if (res.statusCode !== 200) return reject(new Error(`tail answered ${res.statusCode}`));
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const { data, rest } = takeSseEvents(buffer + chunk);
        buffer = rest;
        for (const d of data) seen.push(JSON.parse(d) as Record<string, unknown>);
      });
      res.on('error', () => {});
      resolve();
    };
    const url = `${httpUrl}/v1/tail`;
    const options = { headers: { authorization: `Bearer ${token}` }, signal: controller.signal };
    const req = url.startsWith('https:') ? https.get(url, { ...options, ...(caPem === undefined ? {} : { ca: caPem }) }, onResponse) : http.get(url, options, onResponse);
    req.on('error', (err) => (controller.signal.aborted ? undefined : reject(err)));
  });
  return seen;
}
