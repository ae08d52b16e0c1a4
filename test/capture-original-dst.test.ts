import test from 'ava';
import net from 'node:net';
import { assertOriginalDstAvailable, redirectedDestination } from '../proxy/capture/original-dst.js';
import { closeServer, listen } from './helpers/net.js';

test('the original-destination addon built by npm ci loads', (t) => {
  t.notThrows(() => assertOriginalDstAvailable());
});

test('a connection that was not redirected has no original destination, nor does a socket without a descriptor', async (t) => {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => accepted.push(s));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const client = net.connect(port, '127.0.0.1');
  t.teardown(() => client.destroy());
  await new Promise((resolve) => client.once('connect', resolve));
  while (accepted.length === 0) await new Promise((r) => setImmediate(r));
  const socket = accepted[0]!;
  t.is(redirectedDestination(socket), null);
  socket.destroy();
  // A socket whose descriptor is gone is simply not redirected.
  t.is(redirectedDestination(new net.Socket()), null);
});
