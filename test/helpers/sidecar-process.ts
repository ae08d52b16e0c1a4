import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { CLI, CLI_FROM_SOURCE, startProcess, type Finished, type Running } from './child.js';
import { tempDir } from './sidecar.js';

/** `auditmesh sidecar` in a process of its own: what kill -9, /proc and a shifted clock need. */
export interface SidecarProcess {
  running: Running;
  pid: number;
  ports: { inbound: number; outbound: number; admin: number };
  journalDir: string;
  /** SIGTERM, then its exit. */
  stop(): Promise<Finished>;
}

export interface SidecarProcessOptions {
  appPort: number;
  /** Folder for journal and keys; a fresh temp folder by default (reuse it across restarts). */
  dir?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Modules the child loads first (`--import`), e.g. a shifted clock. */
  preload?: string[];
}

/** Starts the sidecar from source with every port 0 and waits for its listening line. */
export async function startSidecarProcess(t: ExecutionContext, opts: SidecarProcessOptions): Promise<SidecarProcess> {
  const dir = opts.dir ?? (await tempDir(t));
  const journalDir = join(dir, 'journal');
  const args = ['sidecar', '--app-port', String(opts.appPort), '--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0', '--journal', journalDir, '--key', join(dir, 'sidecar.key'), '--redaction-key', join(dir, 'redaction.key'), ...(opts.args ?? [])];
  const preload = (opts.preload ?? []).flatMap((p) => ['--import', p]);
  const running = startProcess(t, process.execPath, [...(preload.length === 0 ? CLI : ['--import=tsx', ...preload, CLI_FROM_SOURCE]), ...args], { ...process.env, ...opts.env });
  const [line] = await running.waitFor(/^\{.*"msg":"sidecar listening".*\}$/m, 60_000);
  const { inbound, outbound, admin } = JSON.parse(line) as { inbound: number; outbound: number; admin: number };
  return {
    running,
    pid: running.child.pid!,
    ports: { inbound, outbound, admin },
    journalDir,
    stop() {
      running.child.kill('SIGTERM');
      return running.done;
    },
  };
}
