import { hash, timingSafeEqual } from 'node:crypto';
import type { ReadScope } from './record-namespace.js';
import { watchFile } from './watched-file.js';

/**
 * Reader tokens (--reader-token-file), for reading from outside the cluster: one a line,
 * `TOKEN NAMESPACE[,NAMESPACE…]` or `TOKEN *`; blank lines and `#` comments ignored. Re-read when
 * the file changes. Tokens are compared as SHA-256 digests with timingSafeEqual, every line each
 * time (as token-auth.ts does): no early exit that would time how much of a token was right.
 */
export interface ReaderTokens {
  /** The scope of a presented token, or null if no line holds it. */
  scopeOf(token: string): ReadScope | null;
}

interface ReaderLine {
  digest: Buffer;
  scope: ReadScope;
}

const digest = (token: string): Buffer => hash('sha256', token, 'buffer');

/** Parses the file's text; throws naming the line at fault. */
export function parseReaderTokens(text: string, path: string): ReaderLine[] {
  const lines: ReaderLine[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(\S+)\s+(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?(,[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$/.exec(line);
    if (m === null) throw new Error(`${path}:${i + 1}: expected "TOKEN NAMESPACE[,NAMESPACE…]" or "TOKEN *"`);
    lines.push({ digest: digest(m[1]), scope: m[2] === '*' ? { all: true } : { all: false, namespaces: new Set(m[2].split(',')) } });
  });
  if (lines.length === 0) throw new Error(`reader token file ${path} holds no token`);
  return lines;
}

export function createReaderTokens(path: string, log?: Parameters<typeof watchFile>[2]): ReaderTokens {
  const file = watchFile(path, parseReaderTokens, log);
  return {
    scopeOf(token) {
      const presented = digest(token);
      let found: ReadScope | null = null;
      for (const line of file.current()) if (timingSafeEqual(line.digest, presented) && found === null) found = line.scope;
      return found;
    },
  };
}
