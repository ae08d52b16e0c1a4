/** What a command gets from the process, so commands run the same in tests and from the shell. */
export interface CommandIO {
  stdout: { write(chunk: string): unknown };
  stderr: { write(chunk: string): unknown };
  env: Readonly<Record<string, string | undefined>>;
  /** Aborted on SIGINT/SIGTERM (or by a test). */
  signal: AbortSignal;
}

export type CommandRun = (argv: readonly string[], io: CommandIO) => Promise<number>;

/** Resolves when the signal aborts (at once if it already has). */
export function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
