import test from 'ava';
import { join } from 'node:path';
import { CLI } from './helpers/child.js';
import { createNamespaces, link, requireInterception, sh, startIn } from './helpers/netns.js';
import { tempDir } from './helpers/sidecar.js';

// The sidecar's /tail carries the pod's records in clear: it answers loopback clients only, while
// /metrics, /livez and /readyz stay reachable on the pod IP (Prometheus, the kubelet). A real
// non-loopback client: another network namespace (127.0.0.2 would still be loopback).

const POD_IP = '10.77.9.1';
const OTHER = '10.77.9.2';
const ADMIN_PORT = 15020;

/** One GET from inside `ns`: the status and the first bytes of the body (a live tail never ends, so it is cut). */
async function getIn(ns: string, url: string): Promise<{ status: number; body: string }> {
  const script = `const r=require('node:http').get(${JSON.stringify(url)},(res)=>{let b='';res.setEncoding('utf8');res.on('data',(c)=>{b+=c;if(res.statusCode===200&&${JSON.stringify(url)}.endsWith('/tail'))done();});res.on('end',done);function done(){console.log(JSON.stringify({status:res.statusCode,body:b.slice(0,300)}));process.exit(0)}});r.on('error',(e)=>{console.log(JSON.stringify({status:0,body:e.message}));process.exit(0)});`;
  return JSON.parse(await sh('ip', 'netns', 'exec', ns, process.execPath, '-e', script)) as { status: number; body: string };
}

test('the admin /tail answers only loopback clients; /metrics, /livez and /readyz answer on the pod IP', async (t) => {
  if (!requireInterception(t)) return;
  const ns = await createNamespaces(t, ['tailpod', 'tailpeer'] as const);
  await link(ns.tailpod, `${POD_IP}/24`, ns.tailpeer, `${OTHER}/24`, 'tl');
  const data = await tempDir(t);
  const sidecar = startIn(t, ns.tailpod, null, [process.execPath, ...CLI, 'sidecar', '--bind', '0.0.0.0', '--admin-port', String(ADMIN_PORT), '--app-port', '8080', '--service', 'pod'], {
    AUDITMESH_JOURNAL: join(data, 'journal'),
    AUDITMESH_KEY: join(data, 'sidecar.key'),
    AUDITMESH_REDACTION_KEY: join(data, 'redaction.key'),
  });
  await sidecar.waitFor(/"msg":"sidecar listening"/, 45_000);

  const remote = await getIn(ns.tailpeer, `http://${POD_IP}:${ADMIN_PORT}/tail`);
  t.is(remote.status, 403);
  t.regex(remote.body, /loopback clients only: reach it with kubectl port-forward/);
  for (const path of ['/metrics', '/livez', '/readyz']) t.is((await getIn(ns.tailpeer, `http://${POD_IP}:${ADMIN_PORT}${path}`)).status, 200, path);
  t.is((await getIn(ns.tailpod, `http://127.0.0.1:${ADMIN_PORT}/tail`)).status, 200, 'loopback in the pod is served');
  t.is((await getIn(ns.tailpod, `http://${POD_IP}:${ADMIN_PORT}/tail`)).status, 403, "the pod's own IP is not loopback");
});
