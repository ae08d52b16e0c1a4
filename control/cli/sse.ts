/**
 * Splits a growing server-sent events buffer into the `data` of each complete event and the
 * unfinished rest (WHATWG HTML, server-sent events: events end at a blank line).
 */
export function takeSseEvents(buffer: string): { data: string[]; rest: string } {
  const data: string[] = [];
  let rest = buffer;
  let end: number;
  while ((end = rest.indexOf('\n\n')) !== -1) {
    const event = rest.slice(0, end);
    rest = rest.slice(end + 2);
    const lines = event
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trimStart());
    if (lines.length > 0) data.push(lines.join('\n'));
  }
  return { data, rest };
}
