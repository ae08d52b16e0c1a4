import { hash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';

/**
 * The ingest credential check: a bearer token from the `authorization` metadata, compared with the
 * tokens of --token-file (one a line, blank lines and `#` comments ignored). The file is read
 * again when its modification time changes, so a rotated Kubernetes Secret takes effect on the
 * next stream without a restart. Tokens are compared as SHA-256 digests with timingSafeEqual:
 * equal lengths, and no early exit that would time out how much of a token was right.
 */
export interface TokenCheck {
  /** true when the `authorization` value carries an accepted token. */
  accepts(authorization: string | undefined): boolean;
}

const digest = (token: string): Buffer => hash('sha256', token, 'buffer');

function readTokens(path: string): Buffer[] {
  const tokens = readFileSync(path, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (tokens.length === 0) throw new Error(`token file ${path} holds no token`);
  return tokens.map(digest);
}

/** Reads the token file now (throws if it cannot: a config error at boot) and on every change after. */
export function createTokenCheck(path: string, log?: (line: Record<string, unknown>) => void): TokenCheck {
  let tokens = readTokens(path);
  let mtimeMs = statSync(path).mtimeMs;
  const reload = (): void => {
    try {
      const m = statSync(path).mtimeMs;
      if (m === mtimeMs) return;
      tokens = readTokens(path);
      mtimeMs = m;
      log?.({ level: 'info', msg: 'collector token file reloaded', tokens: tokens.length });
    } catch (err) {
      // Keep the tokens we had: a Secret being rewritten must not lock every sidecar out.
      log?.({ level: 'error', msg: 'collector token file unreadable, keeping the previous tokens', err: (err as Error).message });
    }
  };
  return {
    accepts(authorization) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
      if (m === null) return false;
      reload();
      const presented = digest(m[1]);
      let ok = false;
      for (const t of tokens) ok = timingSafeEqual(t, presented) || ok;
      return ok;
    },
  };
}
