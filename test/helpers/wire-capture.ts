import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { sh, startIn } from './netns.js';
import { tempDir } from './sidecar.js';

/**
 * What crossed a bridge between two addresses, as tcpdump wrote it (pcap): the packets' bytes
 * verbatim, so a plaintext request line, HTTP/2 preface or message body shows up in the file
 * as it was on the wire, and a TLS ClientHello shows its ALPN names.
 */
export interface WireCapture {
  /** Stops tcpdump and returns the capture: its packet count and its bytes. */
  stop(): Promise<{ packets: number; bytes: Buffer; summary: string }>;
}

/** tcpdump in `netns` on `iface`, only packets between `a` and `b` (either way). Needs root and tcpdump. */
export async function captureBetween(t: ExecutionContext, netns: string, iface: string, a: string, b: string): Promise<WireCapture> {
  const file = join(await tempDir(t), 'wire.pcap');
  // --immediate-mode: each packet read as it comes (else those in the kernel's buffer at SIGINT are
  // dropped); -U: each written as it comes; -s 0: whole packets.
  const dump = startIn(t, netns, null, ['tcpdump', '-i', iface, '--immediate-mode', '-U', '-s', '0', '-n', '-w', file, `host ${a} and host ${b}`]);
  await dump.waitFor(/listening on/, 30_000);
  return {
    async stop() {
      // Packets the kernel holds for tcpdump when it is told to stop are lost: let it read them first.
      await new Promise((resolve) => setTimeout(resolve, 300));
      dump.child.kill('SIGINT');
      await dump.done;
      const listing = await sh('tcpdump', '-n', '-r', file);
      const out = dump.output();
      return { packets: listing.split('\n').filter((l) => l.trim() !== '').length, bytes: await readFile(file), summary: (out.stdout + out.stderr).trim() };
    },
  };
}
