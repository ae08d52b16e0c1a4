import test from 'ava';
import { peerHost, routeByAuthority } from '../proxy/routing/target.js';

const DESTINATION = { host: '10.0.3.7', port: 8081 };

test('a redirected connection is routed to and named by its original destination; a different authority is kept as the claim and names the peer', (t) => {
  const route = routeByAuthority('payments.shop', '/pay', new Map(), 80, DESTINATION)!;
  t.deepEqual(route, { target: DESTINATION, host: '10.0.3.7', port: 8081, path: '/pay', claimed: { authority: 'payments.shop', host: 'payments.shop' } });
  t.is(peerHost(route), 'payments.shop');
});

test('an authority naming the original destination itself is no claim', (t) => {
  const route = routeByAuthority('10.0.3.7:8081', '/', new Map(), 80, DESTINATION)!;
  t.is(route.claimed, undefined);
  t.is(peerHost(route), '10.0.3.7');
});

test('a claim that does not parse is kept as written, bounded, and the peer falls back to the address', (t) => {
  const route = routeByAuthority('bad host:99999' + 'x'.repeat(400), '/', new Map(), 80, DESTINATION)!;
  t.is(route.host, '10.0.3.7');
  t.is(route.claimed!.authority.length, 256);
  t.is(route.claimed!.host, null);
  t.is(peerHost(route), '10.0.3.7');
});

test('without an original destination (explicit proxy), the authority routes and is recorded, through the resolve table', (t) => {
  const route = routeByAuthority('inventory', '/items', new Map([['inventory:80', { host: '127.0.0.1', port: 9999 }]]))!;
  t.deepEqual(route, { target: { host: '127.0.0.1', port: 9999 }, host: 'inventory', port: 80, path: '/items' });
});
