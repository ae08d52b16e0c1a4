// Child entry for the load generator, so it can run pinned to its own core (see children.ts).
// Each IPC message is one run, autocannon's (closed loop, maximum throughput) or a fixed-rate
// one (rate-load.ts); the reply is its result or its error.
import autocannon, { type Options, type Result } from 'autocannon';
import { type RateOptions, type RateResult, runAtRate } from './rate-load.js';

export type LoadRequest = { kind: 'autocannon'; options: Options } | { kind: 'rate'; options: RateOptions };
export type LoadReply = { ok: true; result: Result | RateResult } | { ok: false; error: string };

process.on('message', (request: LoadRequest) => {
  const run: Promise<Result | RateResult> = request.kind === 'rate' ? runAtRate(request.options) : autocannon(request.options);
  run.then(
    (result) => process.send?.({ ok: true, result } satisfies LoadReply),
    (err: unknown) => process.send?.({ ok: false, error: String(err) } satisfies LoadReply),
  );
});
// The parent closing the channel is the signal to go.
process.on('disconnect', () => process.exit(0));
