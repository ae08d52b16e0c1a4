/**
 * Credential-shaped values, whatever parameter or segment carries them. A token is a maximal run
 * of letters, digits, `-`, `_`, `+`, `=`, `~` and `%XX` escapes (and `/` inside query values,
 * where standard base64 keeps it raw). It counts as a credential when it is
 *
 * - a JWT: `eyJ` then two to four more base64url parts joined by dots (JWS or JWE compact form), or
 * - at least MIN_TOKEN_CHARS long, not an ordinary id shape (below), and random-looking: its
 *   longest piece between separators has at least MIN_PIECE_CHARS letters and digits, and at
 *   least CHANGE_RATIO of that piece's adjacent pairs change class (lower, upper, digit), not
 *   counting the capital that starts a word (`getUserName` changes nothing; `aZ3kQ9` changes often).
 *
 * Ordinary ids stay readable: digits (with separators), UUIDs, ULIDs, and hex of the lengths that
 * name content (24 ObjectId, 32 MD5, 40 SHA-1/git, 64 SHA-256). Slugs and camelCase names change
 * class rarely. A random token with long one-class stretches can pass as ordinary (a few in a
 * hundred for lower-case base36, more for base32): names and --secret-paths are the guarantee.
 */
export const MIN_TOKEN_CHARS = 24;
const MIN_PIECE_CHARS = 12;
const CHANGE_RATIO = 0.15;
/** Below this a text cannot hold a JWT or a long token: returned untouched without a scan. */
export const MIN_SCAN_CHARS = 16;
const CONTENT_HEX_LENGTHS = new Set([24, 32, 40, 64]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ULID = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

const DIGIT = 0;
const UPPER = 1;
const LOWER = 2;
const OTHER = 3;

function classOf(c: number): number {
  if (c >= 48 && c <= 57) return DIGIT;
  if (c >= 65 && c <= 90) return UPPER;
  if (c >= 97 && c <= 122) return LOWER;
  return OTHER;
}

/** Token characters by code: 1 everywhere, 2 (`/`) only in query values; see isTokenChar. */
const TOKEN_CHARS = new Uint8Array(128);
for (let c = 0; c < 128; c++) TOKEN_CHARS[c] = c === 47 ? 2 : classOf(c) !== OTHER || '-_+=~%'.includes(String.fromCharCode(c)) ? 1 : 0;

function isHexDigit(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
}

/** Characters a token is made of; `/` only where standard base64 appears raw (query values). */
function isTokenChar(c: number, slash: boolean): boolean {
  const kind = c < 128 ? TOKEN_CHARS[c]! : 0;
  return kind === 1 || (slash && kind === 2);
}

/** The longest random-looking piece of text[start, end) qualifies it; see the module comment. */
function randomLooking(text: string, start: number, end: number): boolean {
  let digits = 0;
  let alnum = 0;
  let best = 0;
  let bestChanges = 0;
  let piece = 0;
  let hexPiece = true;
  let changes = 0;
  let prev = OTHER;
  const flush = (): void => {
    // A piece of pure hex at a content-address length is an id, whatever it looks like.
    const isContentHex = hexPiece && CONTENT_HEX_LENGTHS.has(piece);
    if (!isContentHex && piece > best) [best, bestChanges] = [piece, changes];
    [piece, changes, prev, hexPiece] = [0, 0, OTHER, true];
  };
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    const k = classOf(c);
    if (k === OTHER) {
      if (c === 37) i += 2; // %XX: an escaped separator or base64 character
      flush();
      continue;
    }
    alnum++;
    piece++;
    if (k === DIGIT) digits++;
    if (!isHexDigit(c)) hexPiece = false;
    const startsWord = k === UPPER && i + 1 < end && classOf(text.charCodeAt(i + 1)) === LOWER;
    if (prev !== OTHER && prev !== k && !(prev === UPPER && k === LOWER) && !(prev === LOWER && startsWord)) changes++;
    prev = k;
  }
  flush();
  if (digits === alnum) return false;
  return best >= MIN_PIECE_CHARS && bestChanges / (best - 1) >= CHANGE_RATIO;
}

/** Whether text[start, end) is a credential by shape alone (see the module comment). */
export function isCredentialToken(text: string, start = 0, end = text.length): boolean {
  let runEnd = start;
  while (runEnd < end && isTokenChar(text.charCodeAt(runEnd), false)) runEnd++;
  if (runEnd < end) return jwtEnd(text, start, runEnd) === end;
  const length = end - start;
  if (length < MIN_TOKEN_CHARS) return false;
  if (length === 36 || length === 26) {
    const token = text.slice(start, end);
    if (UUID.test(token) || ULID.test(token)) return false;
  }
  return randomLooking(text, start, end);
}

/** End of the JWT starting at `start` (parts joined by dots), or -1 when none starts there. */
function jwtEnd(text: string, start: number, runEnd: number): number {
  if (!text.startsWith('eyJ', start)) return -1;
  let end = runEnd;
  let parts = 1;
  while (parts < 5 && text.charCodeAt(end) === 46) {
    let next = end + 1;
    while (next < text.length && isTokenChar(text.charCodeAt(next), false) && text.charCodeAt(next) !== 37) next++;
    end = next;
    parts++;
  }
  return parts >= 3 ? end : -1;
}

/**
 * Replaces every credential-shaped token in text by its fingerprint; the rest is kept as it is.
 * `slash`: `/` belongs to tokens (a query value), rather than separating them (a path).
 */
export function redactTokens(text: string, fingerprint: (secret: string) => string, slash: boolean): string {
  if (text.length < MIN_SCAN_CHARS) return text;
  const mayHoldJwt = text.includes('eyJ');
  let out = '';
  let last = 0;
  for (let i = 0; i < text.length; ) {
    if (!isTokenChar(text.charCodeAt(i), slash)) {
      i++;
      continue;
    }
    let start = i;
    while (i < text.length && isTokenChar(text.charCodeAt(i), slash)) i++;
    // A JWT may follow a name and `=` in the same run (`token=eyJ…`): it starts at its `eyJ`.
    const e = mayHoldJwt && text.charCodeAt(i) === 46 ? text.lastIndexOf('eyJ', i - 3) : -1;
    const jwt = e >= start ? jwtEnd(text, e, i) : -1;
    if (jwt !== -1) start = e;
    const end = jwt === -1 ? i : jwt;
    i = end;
    if (jwt === -1 && (end - start < MIN_TOKEN_CHARS || !isCredentialToken(text, start, end))) continue;
    out += text.slice(last, start) + fingerprint(text.slice(start, end));
    last = end;
  }
  return last === 0 ? text : out + text.slice(last);
}
