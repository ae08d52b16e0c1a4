import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { closeServer, listen } from './helpers/net.js';
import { followTail, startTestSidecar } from './helpers/sidecar.js';

/** A server that reads until its client ends its sending side, then answers what it got (or, `silent`, never answers). */
async function endAwareServer(t: ExecutionContext, silent = false): Promise<{ port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = '';
    s.on('error', () => {});
    // A silent server keeps its own side open for ever: only the test ends it.
    t.teardown(() => s.destroy());
    s.setEncoding('utf8');
    s.on('data', (c) => (got += c));
    s.on('end', () => {
      if (!silent) s.end(`echo:${got}`);
    });
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  return { port };
}

/** Connects, sends `first` (then waits for `waitFor` when given), ends its sending side with `data`; what came back by close. */
function halfClose(t: ExecutionContext, port: number, data: string, first?: { send: string; waitFor: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    t.teardown(() => s.destroy());
    let got = '';
    s.setEncoding('utf8');
    s.on('connect', () => (first === undefined ? s.end(data) : s.write(first.send)));
    s.on('data', (c: string) => {
      got += c;
      if (first !== undefined && got.includes(first.waitFor) && s.writable && !s.writableEnded) s.end(data);
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

test('a CONNECT tunnel whose client ends its sending side still carries the server’s reply back, and records bytes both ways', async (t) => {
  const server = await endAwareServer(t);
  const sidecar = await startTestSidecar(t);
  const tail = await followTail(t, sidecar.ports.admin);
  const connect = `CONNECT 127.0.0.1:${server.port} HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\n\r\n`;
  const reply = await halfClose(t, sidecar.ports.outbound, 'hello after end', { send: connect, waitFor: '\r\n\r\n' });
  t.is(reply, 'HTTP/1.1 200 Connection Established\r\n\r\necho:hello after end');
  const rec = await tail.next((r) => r['audit.kind'] === 'tunnel');
  t.like(rec, { 'http.response.status_code': 200, 'audit.bytes_in': 15, 'audit.bytes_out': 20 });
  t.false('error.type' in rec);
});

test('an opaque TCP connection whose client ends its sending side still gets the reply (inbound, relayed to the app)', async (t) => {
  const app = await endAwareServer(t);
  const sidecar = await startTestSidecar(t, { appPort: app.port, opaquePorts: new Set([app.port]) });
  const tail = await followTail(t, sidecar.ports.admin);
  t.is(await halfClose(t, sidecar.ports.inbound!, 'PING 42\r\n'), 'echo:PING 42\r\n');
  const rec = await tail.next((r) => r['audit.kind'] === 'tcp');
  t.like(rec, { 'audit.direction': 'inbound', 'audit.bytes_in': 9, 'audit.bytes_out': 14 });
});

test('a half-closed tunnel whose server never answers is closed by the idle timeout and recorded', async (t) => {
  const IDLE_MS = 300;
  const server = await endAwareServer(t, true);
  const sidecar = await startTestSidecar(t, { idleTimeoutMs: IDLE_MS });
  const tail = await followTail(t, sidecar.ports.admin);
  const connect = `CONNECT 127.0.0.1:${server.port} HTTP/1.1\r\nHost: x\r\n\r\n`;
  const reply = await halfClose(t, sidecar.ports.outbound, 'anyone?', { send: connect, waitFor: '\r\n\r\n' });
  // The client's connection was closed (halfClose resolved); the record is written once the upstream one is.
  t.is(reply, 'HTTP/1.1 200 Connection Established\r\n\r\n');
  const rec = await tail.next((r) => r['audit.kind'] === 'tunnel');
  t.like(rec, { 'audit.bytes_in': 7, 'audit.bytes_out': 0 });
  t.true(rec['audit.duration_ms']! >= IDLE_MS, String(rec['audit.duration_ms']));
});
