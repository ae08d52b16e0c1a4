// Child entry for the load generator, so it can run pinned to its own core (see children.ts).
// Each IPC message is one autocannon run; the reply is its result or its error.
import autocannon, { type Options, type Result } from 'autocannon';

export type LoadReply = { ok: true; result: Result } | { ok: false; error: string };

process.on('message', (options: Options) => {
  autocannon(options).then(
    (result) => process.send?.({ ok: true, result } satisfies LoadReply),
    (err: unknown) => process.send?.({ ok: false, error: String(err) } satisfies LoadReply),
  );
});
// The parent closing the channel is the signal to go.
process.on('disconnect', () => process.exit(0));
