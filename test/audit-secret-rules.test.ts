import test from 'ava';
import { isCredentialToken } from '../proxy/audit/secret-values.js';
import { compileSecretParams, DEFAULT_SECRET_PARAMS } from '../proxy/audit/secret-params.js';
import { createRedactor } from '../proxy/audit/redact.js';
import { parseSidecarConfig } from '../proxy/config.js';

// The rules of issue 30, both sides of each: what is fingerprinted, and what stays readable.

const CREDENTIAL_VALUES: Array<[string, string]> = [
  ['a JWT (JWS)', 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c'],
  ['an unsigned JWT', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.'],
  ['a JWE (five parts)', 'eyJhbGciOiJSU0EtT0FFUCJ9.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji.XFBoMYUZodetZdvTiFvSkQ'],
  ['32 random bytes, base64url', 'q3Vf8ZsN0pLx2Ykd7Rt1uWm9cHa4EoJb6GiTn5Ql-Xw'],
  ['a GitHub token', 'ghp_16C7e42F292c6912E7710c838347Ae178B4a'],
  ['a Stripe secret key', 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'],
  ['a Google API key', 'AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe'],
  ['a Slack bot token', 'xoxb-2486301948-1938471920384-q8Wm3ZtP0aLk7YbV2nXc9RfD'],
  ['hex of a length no content hash has (36)', '8f14e45fceea167a5a36dedd4bea2543f1c2'],
  ['a lower-case base36 session id', 'k2x9q0m4t7b1z8w3r6n5v0c2p4'],
  ['base64 with escaped + and =', 'aB3dE5fG7hJ9kL1mN3pQ5rS7tU9v%2BwX1yZ3%3D'],
];

const ORDINARY_VALUES: Array<[string, string]> = [
  ['a UUID', '550e8400-e29b-41d4-a716-446655440000'],
  ['an upper-case UUID', '550E8400-E29B-41D4-A716-446655440000'],
  ['a ULID', '01ARZ3NDEKTSV4RRFFQ69G5FAV'],
  ['a numeric id', '123456789012345678901234567890'],
  ['a MongoDB ObjectId (24 hex)', '507f1f77bcf86cd799439011'],
  ['an MD5 (32 hex)', 'd41d8cd98f00b204e9800998ecf8427e'],
  ['a git commit (40 hex)', 'da39a3ee5e6b4b0d3255bfef95601890afd80709'],
  ['a SHA-256 (64 hex)', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
  ['a slug', 'how-to-configure-kubernetes-ingress-controllers'],
  ['a dated slug', '2024-01-15-release-notes-version-2-3-1'],
  ['a camelCase gRPC method', 'GetUserAccountSettingsV2Request'],
  ['a Kubernetes API kind', 'ListNamespacedCustomObjectsV1beta1'],
  ['a Kubernetes pod name', 'nginx-deployment-66b6c48dd5-4jw2p'],
  ['a file name', 'IMG_20240115_123456789_HDR_final_edit'],
  ['a snake_case name with numbers', 'my_long_file_name_with_words_2024_final'],
  ['a compound id', 'order-10023-item-55-shipment-3-label'],
  ['a bucket name', 'S3BucketNameForProductionAssets2024'],
  ['a short random-looking code', 'aZ3kQ9xW'],
  ['base64 JSON too short for a token, no dots', 'eyJwYWdlIjoyfQ'],
];

for (const [what, value] of CREDENTIAL_VALUES) {
  test(`by shape, ${what} is a credential, in a path and in any query value`, (t) => {
    const r = createRedactor({ key: Buffer.from('k') });
    t.false(r.path(`/v1/${value}/status`).includes(value));
    t.false(r.query(`page=2&q=${value}`).includes(value));
    t.regex(r.query(`page=2&q=${value}`), /^page=2&q=hmac-sha256:[0-9a-f]{32}$/);
  });
}

for (const [what, value] of ORDINARY_VALUES) {
  test(`by shape, ${what} is an ordinary id, recorded as it is`, (t) => {
    const r = createRedactor({ key: Buffer.from('k') });
    t.false(isCredentialToken(value));
    t.is(r.path(`/v1/${value}/status`), `/v1/${value}/status`);
    t.is(r.query(`id=${value}`), `id=${value}`);
  });
}

const SECRET_NAMES = [
  'access_token', 'id_token', 'refresh_token', 'apikey', 'api_key', 'apiKey', 'x-api-key', 'key', 'sig', 'code', 'password', 'user[password]', 'passwd',
  'X-Amz-Signature', 'X-Amz-Credential', 'X-Amz-Security-Token', 'x-goog-signature', 'X-Goog-Credential', 'Signature', 'client_secret', 'session_id', 'sessionId',
  'JSESSIONID', 'PHPSESSID', 'jwt', 'auth', 'authToken', 'Authorization', 'api_key[0]', 'auth.token', 'otp', 'totp', 'code_verifier', 'oauth_verifier',
  'private-key', 'AWSAccessKeyId', 'client_assertion', 'pwd', 'credentials[aws][secret]',
];
const ORDINARY_NAMES = ['design', 'signal', 'signup', 'author', 'authority', 'country_code', 'zipCode', 'barcode', 'codec', 'keyword', 'monkey', 'hotpot', 'footprint', 'page', 'q', 'id', 'user_id', 'sort', 'state', 'passage'];

test('by name, each secret parameter name matches a built-in pattern', (t) => {
  const secret = compileSecretParams(DEFAULT_SECRET_PARAMS);
  t.deepEqual(SECRET_NAMES.filter((n) => !secret(n)), []);
});

test('by name, ordinary parameter names match no built-in pattern', (t) => {
  const secret = compileSecretParams(DEFAULT_SECRET_PARAMS);
  t.deepEqual(ORDINARY_NAMES.filter((n) => secret(n)), []);
});

test('a secret-named value is fingerprinted however short, percent-encoded names included', (t) => {
  const r = createRedactor({ key: Buffer.from('k') });
  t.regex(r.query('X%2DAmz%2DSignature=ab&design=1'), /^X%2DAmz%2DSignature=hmac-sha256:[0-9a-f]{32}&design=1$/);
  t.regex(r.query('api_key%5B0%5D=x'), /^api_key%5B0%5D=hmac-sha256:/);
});

test('--secret-params adds to the built-in patterns; a leading = replaces them', (t) => {
  const added = parseSidecarConfig(['--secret-params', 'ticket,^x-my-'], {});
  const extra = compileSecretParams(added.secretParams);
  t.true(extra('ticket_id') && extra('X-My-Sig-Thing') && extra('access_token'));
  const replaced = compileSecretParams(parseSidecarConfig(['--secret-params', '=ticket'], {}).secretParams);
  t.true(replaced('ticket'));
  t.false(replaced('access_token'));
  t.deepEqual(parseSidecarConfig([], { AUDITMESH_SECRET_PARAMS: '=' }).secretParams, []);
});

test('bad --secret-params or --secret-paths stop the sidecar at boot, naming the flag', (t) => {
  t.throws(() => parseSidecarConfig(['--secret-params', 'token,--'], {}), { message: /--secret-params: "--" names no letters or digits/ });
  t.throws(() => parseSidecarConfig(['--secret-paths', '/hooks/{token}'], {}), { message: /--secret-paths: .*has no \{secret\} segment/ });
  t.throws(() => parseSidecarConfig(['--secret-paths', 'hooks/{secret}'], {}), { message: /--secret-paths: .*does not start with \// });
});

test('secret path templates fingerprint their {secret} segments from the path start, and nothing else', (t) => {
  const r = createRedactor({ key: Buffer.from('k'), secretPaths: ['/hooks/{secret}', '/users/*/reset/{secret}'] });
  const fp = r.fingerprint('pw1');
  t.is(r.path('/hooks/pw1'), `/hooks/${fp}`);
  t.is(r.path('/hooks/pw1/status'), `/hooks/${fp}/status`);
  t.is(r.path('/users/42/reset/pw1'), `/users/42/reset/${fp}`);
  t.is(r.path('/users/42/profile/pw1'), '/users/42/profile/pw1');
  t.is(r.path('/webhooks/pw1'), '/webhooks/pw1');
  t.is(r.path('/hooks'), '/hooks');
  t.is(r.path('/hooks/'), '/hooks/');
});

test('userinfo in an absolute-form target is fingerprinted, a ? or @ inside the password included; the query is still split off', (t) => {
  const r = createRedactor({ key: Buffer.from('k') });
  t.deepEqual(r.target('http://alice:pw@shop.local:8080/cart?page=2'), { path: `http://${r.fingerprint('alice:pw')}@shop.local:8080/cart`, query: 'page=2' });
  t.deepEqual(r.target('http://alice:p?w@d@shop.local/'), { path: `http://${r.fingerprint('alice:p?w@d')}@shop.local/` });
  t.deepEqual(r.target('http://shop.local?token=abc'), { path: 'http://shop.local', query: `token=${r.fingerprint('abc')}` });
  t.deepEqual(r.headers({ host: 'alice:pw@shop.local' }), { host: `${r.fingerprint('alice:pw')}@shop.local` });
});

test('a credential-shaped token inside a recorded header value or a claim is fingerprinted, the rest kept', (t) => {
  const r = createRedactor({ key: Buffer.from('k') });
  const jwt = CREDENTIAL_VALUES[0]![1];
  t.is(r.headers({ 'user-agent': `probe/1.0 ${jwt}` })['user-agent'], `probe/1.0 ${r.fingerprint(jwt)}`);
  t.is(r.text(`token ${jwt} rejected`), `token ${r.fingerprint(jwt)} rejected`);
});
