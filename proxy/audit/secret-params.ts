/**
 * Query parameter names whose values are secrets, as name patterns (after Rails'
 * filter_parameters). A name is matched in a normal form: camelCase split into words, lower-cased,
 * every run of other characters written `_`, and `_` at both ends, so `X-Amz-Signature` is
 * `_x_amz_signature_` and `api_key[0]` is `_api_key_0_`. A pattern, written the same way, matches
 * where it appears in that form: `token` anywhere (partial), `_sig_` only as a whole word (so not
 * `design`), `^x-amz-` at the start, `^code$` as the whole name.
 */
export const DEFAULT_SECRET_PARAMS: readonly string[] = [
  'passw', 'secret', 'token', 'credential', 'session', 'sessid', 'jwt', 'signature', 'apikey', 'accesskey', 'privatekey',
  'authorization', 'verifier', 'assertion',
  '_key_', '_sig_', '_auth_', '_otp_', '_totp_', '_pwd_', '_pass_', '_cvv_', '_cvc_',
  // OAuth's authorization code arrives as `code`; `country_code` and `zip_code` are not secrets.
  '^code$',
  // Every parameter of an S3 or GCS presigned URL: signature, credential, security token.
  '^x-amz-', '^x-goog-',
];

const MAX_REMEMBERED_NAMES = 512;

/** Leading `=` on the first entry: the list replaces the defaults instead of adding to them. */
const REPLACE_MARK = '=';

/** A name (or a pattern's body) in the normal form patterns are matched in. */
function normalForm(text: string): string {
  return text.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase().replace(/[^a-z0-9]+/g, '_');
}

function patternSource(pattern: string): string {
  const start = pattern.startsWith('^');
  const end = pattern.endsWith('$') && pattern.length > 1;
  const body = normalForm(pattern.slice(start ? 1 : 0, end ? -1 : undefined));
  if (body.replace(/_/g, '') === '') throw new Error(`${JSON.stringify(pattern)} names no letters or digits`);
  return (start ? '^_' : '') + body + (end ? '_$' : '');
}

/** The patterns in effect: the defaults plus `list`, or `list` alone when it starts with `=`. */
export function effectiveSecretParams(list: readonly string[]): string[] {
  const first = list[0];
  if (first !== undefined && first.startsWith(REPLACE_MARK)) return [first.slice(1).trim(), ...list.slice(1)].filter((p) => p !== '');
  return [...DEFAULT_SECRET_PARAMS, ...list];
}

/**
 * Compiles patterns (already effective) into one test, once at boot; throws naming a pattern that
 * cannot match anything. The test takes a decoded parameter name.
 */
export function compileSecretParams(patterns: readonly string[]): (name: string) => boolean {
  if (patterns.length === 0) return () => false;
  const re = new RegExp(patterns.map(patternSource).join('|'));
  // The same few names come back request after request: remember the answer (bounded).
  const known = new Map<string, boolean>();
  return (name) => {
    let secret = known.get(name);
    if (secret !== undefined) return secret;
    secret = re.test('_' + normalForm(name) + '_');
    if (known.size >= MAX_REMEMBERED_NAMES) known.delete(known.keys().next().value!);
    known.set(name, secret);
    return secret;
  };
}
