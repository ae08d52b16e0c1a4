// `node --import=tsx bench/profile-top.ts FILE.cpuprofile [N]`: the N functions with the most
// self time in a V8 CPU profile (what `PROFILE=1 npm run bench` writes), and each file's share,
// so a report can name where the time goes without opening DevTools.
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const short = (url: string): string => url.replace(/^file:\/\/.*?\/(node_modules|proxy|bench|control)\//, '$1/').replace(/^node:/, 'node:');

/** Self time per function (µs), from the samples and the time between them. */
export function selfTimes(profile: Profile): Map<string, number> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined) return;
    const name = `${frame.functionName || '(anonymous)'} ${frame.url === '' ? '' : `${short(frame.url)}:${frame.lineNumber + 1}`}`.trim();
    totals.set(name, (totals.get(name) ?? 0) + (profile.timeDeltas[i + 1] ?? 0));
  });
  return totals;
}

function main(): void {
  const [file, n] = process.argv.slice(2);
  if (file === undefined) {
    console.error('usage: profile-top.ts FILE.cpuprofile [N]');
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const totals = selfTimes(profile);
  const all = [...totals.values()].reduce((a, b) => a + b, 0);
  const idle = totals.get('(idle)') ?? 0;
  console.log(`${file}: ${(all / 1e6).toFixed(1)} s sampled, ${((idle / all) * 100).toFixed(0)}% idle; self time as % of non-idle samples`);
  const top = [...totals].filter(([name]) => name !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, Number(n ?? 25));
  for (const [name, us] of top) console.log(`${((us / (all - idle)) * 100).toFixed(1).padStart(5)}%  ${name}`);
}

main();
