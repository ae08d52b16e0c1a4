import { readFileSync, statSync } from 'node:fs';

/**
 * A file parsed at boot (a config error throws then) and parsed again when its modification time
 * changes, so a rotated Secret or an updated ConfigMap takes effect without a restart. A file
 * that cannot be read or parsed after boot keeps the previous value: a Secret being rewritten
 * must not lock every reader out.
 */
export interface WatchedFile<T> {
  /** The value of the file as last parsed, re-read first if it changed. */
  current(): T;
}

export function watchFile<T>(path: string, parse: (text: string, path: string) => T, log?: (level: 'info' | 'error', msg: string, fields: Record<string, unknown>) => void): WatchedFile<T> {
  let value = parse(readFileSync(path, 'utf8'), path);
  let mtimeMs = statSync(path).mtimeMs;
  return {
    current() {
      try {
        const m = statSync(path).mtimeMs;
        if (m !== mtimeMs) {
          value = parse(readFileSync(path, 'utf8'), path);
          mtimeMs = m;
          log?.('info', 'file reloaded', { path });
        }
      } catch (err) {
        log?.('error', 'file unreadable or invalid, keeping what it held before', { path, err: (err as Error).message });
      }
      return value;
    },
  };
}
