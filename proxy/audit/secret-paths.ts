/**
 * Path templates of routes that carry a secret in a segment (`--secret-paths`): reset links,
 * webhook URLs. A template is `/`-separated segments, each a literal (matched exactly), `*` (any
 * one segment) or `{secret}` (any one segment, fingerprinted). It matches a path from its start;
 * more segments may follow (`/hooks/{secret}` covers `/hooks/abc/status`).
 */
export type SecretPathTemplate = ReadonlyArray<string | typeof ANY | typeof SECRET>;

const ANY = Symbol('any segment');
const SECRET = Symbol('secret segment');

/** Parses templates once at boot; throws naming the first malformed one. */
export function parseSecretPaths(list: readonly string[]): SecretPathTemplate[] {
  return list.map((template) => {
    if (!template.startsWith('/')) throw new Error(`${JSON.stringify(template)} does not start with /`);
    const segments = template.slice(1).split('/').map((s) => (s === '*' ? ANY : s === '{secret}' ? SECRET : s));
    if (!segments.includes(SECRET)) throw new Error(`${JSON.stringify(template)} has no {secret} segment`);
    const odd = segments.find((s) => typeof s === 'string' && /[{}*]/.test(s));
    if (odd !== undefined) throw new Error(`${JSON.stringify(template)}: segment ${JSON.stringify(odd)} is neither a literal, * nor {secret}`);
    return segments;
  });
}

/** Whether template matches the path's leading segments (`segments[0]` is the empty one before the first `/`). */
function matches(template: SecretPathTemplate, segments: readonly string[]): boolean {
  if (segments.length - 1 < template.length) return false;
  for (let i = 0; i < template.length; i++) {
    const want = template[i];
    if (typeof want === 'string' && want !== segments[i + 1]) return false;
    if (want === SECRET && segments[i + 1] === '') return false;
  }
  return true;
}

/** The path (no query) with the `{secret}` segments of every matching template fingerprinted. */
export function redactSecretPaths(path: string, templates: readonly SecretPathTemplate[], fingerprint: (secret: string) => string): string {
  if (templates.length === 0 || !path.startsWith('/')) return path;
  // Most paths match no template on their first segment: those are not split at all.
  const slash = path.indexOf('/', 1);
  const first = path.slice(1, slash === -1 ? undefined : slash);
  if (!templates.some((tpl) => typeof tpl[0] !== 'string' || tpl[0] === first)) return path;
  const segments = path.split('/');
  // Matched against the segments as sent, so overlapping templates see the same path.
  const redacted = [...segments];
  let changed = false;
  for (const template of templates) {
    if (!matches(template, segments)) continue;
    for (let i = 0; i < template.length; i++) {
      if (template[i] !== SECRET) continue;
      redacted[i + 1] = fingerprint(segments[i + 1]!);
      changed = true;
    }
  }
  return changed ? redacted.join('/') : path;
}
