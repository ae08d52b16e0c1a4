import type http from 'node:http';
import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * Live-tail streams (server-sent events) with bounds: at most `maxSubscribers` at once (503 past
 * it), and a subscriber whose unsent bytes pass `maxBufferBytes` is cut off rather than buffered
 * without bound. Both are counted. Shared by the sidecar's admin /tail and the collector's /v1/tail.
 */

export interface TailLimits {
  /** Subscribers at once; past it a new one gets 503 (`--max-tail-subscribers`). */
  maxSubscribers: number;
  /** Unsent bytes one subscriber may hold; past it the subscriber is dropped. */
  maxBufferBytes?: number;
}

export const DEFAULT_MAX_TAIL_SUBSCRIBERS = 64;
export const MAX_TAIL_BUFFER_BYTES = 4 * 1024 * 1024;
/** SSE comment sent this often so idle tails survive proxies and notice dead clients. */
const TAIL_HEARTBEAT_MS = 15_000;

export type Subscribe = (send: (id: string, data: string) => void) => () => void;

export interface TailStreams {
  /** Serves `res` as an event stream until the client goes, or answers 503 when at the cap. */
  serve(res: http.ServerResponse, subscribe: Subscribe): void;
  /** Subscribers now. */
  readonly size: number;
}

/** `metricPrefix`: `auditmesh` for the sidecar, `auditmesh_collector` for the collector. */
export function createTailStreams(registry: Registry, metricPrefix: string, limits: TailLimits): TailStreams {
  const maxBufferBytes = limits.maxBufferBytes ?? MAX_TAIL_BUFFER_BYTES;
  let size = 0;
  const turnedAway = new Counter({
    name: `${metricPrefix}_tail_turned_away_total`,
    help: 'Live-tail subscribers turned away: refused at --max-tail-subscribers (at_capacity), or cut off for not reading (slow_reader)',
    labelNames: ['reason'],
    registers: [registry],
  });
  const subscribers = new Gauge({ name: `${metricPrefix}_tail_subscribers`, help: 'Live-tail subscribers now', registers: [registry] });

  function serve(res: http.ServerResponse, subscribe: Subscribe): void {
    if (size >= limits.maxSubscribers) {
      turnedAway.inc({ reason: 'at_capacity' });
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'retry-after': '5', connection: 'close' });
      return void res.end(`too many live-tail subscribers: at most ${limits.maxSubscribers} at once (--max-tail-subscribers); try again later\n`);
    }
    subscribers.set(++size);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write(': auditmesh tail\n\n');
    const unsubscribe = subscribe((id, data) => {
      if (res.destroyed) return;
      // A subscriber that does not read is cut off, never buffered without bound.
      if (res.writableLength > maxBufferBytes) {
        turnedAway.inc({ reason: 'slow_reader' });
        return void res.destroy();
      }
      res.write(`id: ${id}\ndata: ${data}\n\n`);
    });
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), TAIL_HEARTBEAT_MS);
    res.once('close', () => {
      clearInterval(heartbeat);
      unsubscribe();
      subscribers.set(--size);
    });
  }

  return {
    serve,
    get size() {
      return size;
    },
  };
}
