import test from 'ava';
import { parseSidecarConfig } from '../proxy/config.js';

test('the sidecar id defaults to $HOSTNAME, then the service; --sidecar-id wins', (t) => {
  t.is(parseSidecarConfig([], { HOSTNAME: 'ledger-7d9f8c6b5-x2x4q' }).sidecarId, 'ledger-7d9f8c6b5-x2x4q');
  t.is(parseSidecarConfig(['--service', 'ledger'], {}).sidecarId, 'ledger');
  t.is(parseSidecarConfig(['--sidecar-id', 'pod-a'], { HOSTNAME: 'h' }).sidecarId, 'pod-a');
  t.is(parseSidecarConfig([], { AUDITMESH_SIDECAR_ID: 'from-env', HOSTNAME: 'h' }).sidecarId, 'from-env');
});

test('shipping flags parse with their defaults and are checked at boot, naming the flag', (t) => {
  const cfg = parseSidecarConfig(['--collector', 'collector:9400', '--ship-window-segments', '4', '--ship-ack-timeout-ms', '5000', '--batch-max-records', '1'], {});
  t.deepEqual(cfg.ship, { windowSegments: 4, windowBytes: 8 * 1024 * 1024, welcomeTimeoutMs: 10_000, ackTimeoutMs: 5_000, keepaliveMs: 30_000, keepaliveTimeoutMs: 10_000, backoffMaxMs: 30_000 });
  t.is(cfg.batchMaxRecords, 1);
  t.is(parseSidecarConfig([], {}).batchMaxRecords, 256);
  t.throws(() => parseSidecarConfig(['--ship-window-segments', '0'], {}), { message: /--ship-window-segments: at least 1/ });
  t.throws(() => parseSidecarConfig(['--batch-max-records', '0'], {}), { message: /--batch-max-records: at least 1/ });
  t.throws(() => parseSidecarConfig(['--collector', 'no-port'], {}), { message: /--collector: expected HOST:PORT/ });
});
