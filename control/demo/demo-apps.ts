import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A sample app of the demo mesh, listening on 127.0.0.1. */
export interface DemoApp {
  port: number;
  close(): Promise<void>;
}

async function listen(server: http.Server): Promise<DemoApp> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/**
 * inventory: GET /items/:id (404 for every 7th id; asks pricing over gRPC for the price),
 * POST /reservations.
 */
export function startInventory(quote: (item: number, headers: Record<string, string>) => Promise<number | null>): Promise<DemoApp> {
  return listen(
    http.createServer((req, res) => {
      const item = /^\/items\/(\d+)$/.exec(req.url ?? '');
      if (req.method === 'GET' && item !== null) {
        const id = Number(item[1]);
        if (id % 7 === 0) return json(res, 404, { error: 'no such item' });
        void quote(id, { traceparent: String(req.headers.traceparent ?? ''), 'x-request-id': String(req.headers['x-request-id'] ?? '') }).then((cents) =>
          json(res, 200, { id, name: `item-${id}`, stock: id % 5, cents }),
        );
        return;
      }
      if (req.method === 'POST' && req.url === '/reservations') {
        req.resume();
        req.on('end', () => json(res, 201, { reserved: true }));
        return;
      }
      json(res, 404, { error: 'not found' });
    }),
  );
}

/**
 * frontend: GET /checkout/:id calls inventory twice through its own sidecar's outbound
 * listener, as an app would with HTTP_PROXY set: the service-to-service edge of the demo. The
 * port is read per call: the app starts before its sidecar, which needs the app's port.
 */
export function startFrontend(outboundProxyPort: () => number): Promise<DemoApp> {
  // A well-behaved app propagates the correlation headers it received to the calls it makes.
  const call = (incoming: http.IncomingHttpHeaders, method: string, path: string, body?: string): Promise<number> =>
    new Promise((resolve) => {
      const headers = { host: 'inventory', 'content-type': 'application/json', traceparent: incoming.traceparent ?? '', 'x-request-id': incoming['x-request-id'] ?? '' };
      const req = http.request(
        { host: '127.0.0.1', port: outboundProxyPort(), method, path: `http://inventory${path}`, headers },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 502));
        },
      );
      req.on('error', () => resolve(502));
      req.end(body);
    });
  return listen(
    http.createServer((req, res) => {
      const m = /^\/checkout\/(\d+)$/.exec(req.url ?? '');
      if (m === null) return json(res, 404, { error: 'not found' });
      void (async () => {
        const found = await call(req.headers, 'GET', `/items/${m[1]}`);
        if (found !== 200) return json(res, found === 404 ? 404 : 502, { error: `inventory answered ${found}` });
        const reserved = await call(req.headers, 'POST', '/reservations', JSON.stringify({ item: Number(m[1]) }));
        json(res, reserved === 201 ? 200 : 502, { ordered: reserved === 201 });
      })();
    }),
  );
}
