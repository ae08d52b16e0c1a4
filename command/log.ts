/** One structured log line: JSON on stderr, so it can be shipped and searched. Never holds secrets. */
export type Logger = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

const RANK = { info: 0, warn: 1, error: 2, silent: 3 } as const;

export function createLogger(minLevel: keyof typeof RANK, sink: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  return (level, msg, fields) => {
    if (RANK[level] < RANK[minLevel]) return;
    sink(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
  };
}
