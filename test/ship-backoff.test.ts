import test from 'ava';
import { fullJitterMs, refusalDelayMs } from '../proxy/ship/backoff.js';

test('reconnect delays grow exponentially under full jitter and stop at the cap', (t) => {
  const top = () => 0.999_999;
  t.deepEqual([0, 1, 2, 3, 4].map((a) => fullJitterMs(a, 100, 1_000, top)), [99, 199, 399, 799, 999]);
  t.is(fullJitterMs(60, 100, 1_000, top), 999, 'no overflow for a long outage');
  t.is(fullJitterMs(3, 100, 1_000, () => 0), 0, 'full jitter reaches down to zero');
});

test('after a refusal the delay stays between half the cap and the cap', (t) => {
  t.is(refusalDelayMs(30_000, () => 0), 15_000);
  t.is(refusalDelayMs(30_000, () => 0.999_999), 29_999);
});
