// nginx as the reference reverse proxy: found on PATH or in /usr/sbin, installed from Debian
// packages when missing (root with apt-get only), run as the current user with everything it
// writes (pid, error log, temp files) in a temp folder, listening on 127.0.0.1 only.
import { execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MemoryCgroup } from './cgroup.js';
import { type ServerChild, spawnPinned, stopChild } from './children.js';
import { UPSTREAM_KEEP_ALIVE_MS } from './upstream.js';

/** Same pool shape as the Node forwarders and the sidecar (256 idle upstream sockets, 4 s idle). */
const UPSTREAM_KEEPALIVE_SOCKETS = 256;
const UPSTREAM_IDLE_S = 4;
// Above nginx's default of 1000, so neither side closes a busy keep-alive connection mid-run
// (autocannon would count the reconnects in its latencies).
const KEEPALIVE_REQUESTS = 10_000_000;
const START_TIMEOUT_MS = 10_000;
const START_ATTEMPTS = 3;
const NGINX_PATHS = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx'];
/** Debian ships a small build first; the full one is the fallback. */
const DEBIAN_PACKAGES = ['nginx-light', 'nginx'];

/** Where nginx is, or why it is not used. */
export type NginxFound = { ok: true; binary: string; version: string; installed: boolean } | { ok: false; reason: string };

function onPath(name: string): string | null {
  const candidates = [...(process.env.PATH ?? '').split(':').filter((d) => d !== '').map((d) => join(d, name)), ...NGINX_PATHS];
  for (const file of candidates) {
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

function versionOf(binary: string): string {
  // nginx -v prints to stderr.
  const out = spawnSync(binary, ['-v'], { encoding: 'utf8' });
  return (out.stderr || out.stdout).trim().replace(/^nginx version:\s*/, '');
}

function hasCandidate(pkg: string): boolean {
  try {
    const policy = execFileSync('apt-cache', ['policy', pkg], { encoding: 'utf8' });
    return /Candidate:\s*(?!\(none\))\S+/.test(policy);
  } catch {
    return false;
  }
}

function install(): string | null {
  if (process.getuid?.() !== 0) return 'nginx not found, and installing it needs root';
  if (onPath('apt-get') === null) return 'nginx not found, and there is no apt-get to install it';
  process.stderr.write('nginx not found: apt-get update && apt-get install -y nginx-light (or nginx) ...\n');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = spawnSync('apt-get', ['update', '-qq'], { stdio: ['ignore', 'inherit', 'inherit'], env });
  if (update.status !== 0) return `apt-get update failed (exit ${update.status})`;
  const pkg = DEBIAN_PACKAGES.find(hasCandidate);
  if (pkg === undefined) return `no Debian package among ${DEBIAN_PACKAGES.join(', ')}`;
  const result = spawnSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: ['ignore', 'inherit', 'inherit'], env });
  return result.status === 0 ? null : `apt-get install ${pkg} failed (exit ${result.status})`;
}

/** Finds nginx, installing it first where that is possible; never throws. */
export function findNginx(allowInstall: boolean): NginxFound {
  let binary = onPath('nginx');
  let installed = false;
  if (binary === null) {
    if (!allowInstall) return { ok: false, reason: 'nginx not found (NGINX_INSTALL=0)' };
    const failure = install();
    if (failure !== null) return { ok: false, reason: failure };
    binary = onPath('nginx');
    if (binary === null) return { ok: false, reason: 'nginx installed but not found on PATH or in /usr/sbin' };
    installed = true;
  }
  return { ok: true, binary, version: versionOf(binary), installed };
}

/**
 * One process (master_process off) so its CPU time and RSS are read like the Node servers'; the
 * worker's request path is the same as under a master. No access log: the Node paths keep none.
 */
export function nginxConfig(dir: string, listenPort: number, upstreamPort: number): string {
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_timeout ${Math.round(UPSTREAM_KEEP_ALIVE_MS / 1000)}s;
  keepalive_requests ${KEEPALIVE_REQUESTS};
  upstream app {
    server 127.0.0.1:${upstreamPort};
    keepalive ${UPSTREAM_KEEPALIVE_SOCKETS};
    keepalive_timeout ${UPSTREAM_IDLE_S}s;
    keepalive_requests ${KEEPALIVE_REQUESTS};
  }
  server {
    listen 127.0.0.1:${listenPort};
    location / {
      proxy_pass http://app;
      # Upstream keep-alive needs HTTP/1.1 and no "Connection: close" passed on.
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The server, or the end of nginx's error log when it exited at start. */
async function startOnce(binary: string, dir: string, upstreamPort: number, cpus: string | null, cgroup: MemoryCgroup | null): Promise<ServerChild | { exitLog: string }> {
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  await writeFile(conf, nginxConfig(dir, port, upstreamPort));
  // -e: the error log before the config is read (the built-in path is under /var/log, root's).
  const child = spawnPinned(cpus, [binary, '-p', dir, '-c', conf, '-e', join(dir, 'error.log')], 'pipe', process.env, cgroup);
  child.on('error', () => {});
  const exited = once(child, 'exit').then(() => null);
  const deadline = performance.now() + START_TIMEOUT_MS;
  for (;;) {
    // Another process may take the free port between our close and nginx's bind: then nginx exits.
    const up = await Promise.race([accepts(port), exited]);
    if (up === null) return { exitLog: (await readFile(join(dir, 'error.log'), 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ') };
    if (up) return { kind: 'nginx', pid: child.pid!, port, gc: () => null, stop: () => stopChild(child) };
    if (performance.now() > deadline) {
      await stopChild(child);
      throw new Error(`nginx: not accepting on ${port} within ${START_TIMEOUT_MS} ms (see ${dir}/error.log)`);
    }
    await sleep(20);
  }
}

/** Starts nginx in front of the upstream; stop() also removes its temp folder. */
export async function startNginxChild(binary: string, upstreamPort: number, cpus: string | null, cgroup: MemoryCgroup | null = null): Promise<ServerChild> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-nginx-'));
  let exitLog = '';
  try {
    for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
      const child = await startOnce(binary, dir, upstreamPort, cpus, cgroup);
      if ('exitLog' in child) exitLog = child.exitLog;
      else {
        return {
          ...child,
          async stop() {
            await child.stop();
            await rm(dir, { recursive: true, force: true });
          },
        };
      }
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error(`nginx: exited at start ${START_ATTEMPTS} times; error log: ${exitLog || '(empty)'}`);
}
