// Latency against offered load as an SVG: one panel per percentile, one line per path, both axes
// logarithmic (rates span a decade, latencies several). Hand-written: the charting libraries
// that render SVG without a browser need Node 22 (vega-lite 6) or a DOM (chartist).

export interface Series {
  name: string;
  /** Offered rate (req/s) and latency (ms); points need not cover every rate. */
  points: readonly { x: number; y: number }[];
}

export interface Panel {
  title: string;
  series: readonly Series[];
}

const PANEL_W = 460;
const PANEL_H = 340;
const MARGIN = { left: 62, right: 18, top: 40, bottom: 48 };
const LEGEND_ROW_H = 20;
const FONT = 'font-family="sans-serif" font-size="12"';
// Colour-blind-safe palette (Okabe-Ito), in path order.
const COLOURS = ['#000000', '#E69F00', '#56B4E9', '#009E73', '#0072B2', '#D55E00', '#CC79A7', '#999999'];

const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (n: number): string => (Math.round(n * 10) / 10).toString();

function logScale(min: number, max: number, from: number, to: number): (v: number) => number {
  const [lo, hi] = [Math.log10(min), Math.log10(max)];
  return (v) => from + ((Math.log10(v) - lo) / (hi - lo || 1)) * (to - from);
}

/** 1-2-5 steps covering [min, max], so a log axis gets a few readable ticks. */
function niceTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let decade = Math.floor(Math.log10(min)); decade <= Math.ceil(Math.log10(max)); decade++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** decade;
      if (v >= min && v <= max) ticks.push(v);
    }
  }
  return ticks;
}

const tickLabel = (v: number): string => (v >= 1000 ? `${v / 1000}k` : v >= 1 ? String(v) : String(Number(v.toPrecision(2))));

function renderPanel(panel: Panel, offsetX: number, xs: readonly number[], yRange: [number, number], colourOf: (name: string) => string): string {
  const [x0, x1] = [offsetX + MARGIN.left, offsetX + PANEL_W - MARGIN.right];
  const [y0, y1] = [MARGIN.top + PANEL_H - MARGIN.top - MARGIN.bottom, MARGIN.top];
  const x = logScale(Math.min(...xs) / 1.25, Math.max(...xs) * 1.25, x0, x1);
  const y = logScale(yRange[0], yRange[1], y0, y1);
  const out: string[] = [`<text x="${num((x0 + x1) / 2)}" y="22" text-anchor="middle" ${FONT} font-weight="bold">${escapeXml(panel.title)}</text>`];
  out.push(`<rect x="${x0}" y="${y1}" width="${x1 - x0}" height="${y0 - y1}" fill="none" stroke="#444"/>`);
  for (const t of niceTicks(yRange[0], yRange[1])) {
    out.push(`<line x1="${x0}" x2="${x1}" y1="${num(y(t))}" y2="${num(y(t))}" stroke="#ddd"/>`);
    out.push(`<text x="${x0 - 6}" y="${num(y(t) + 4)}" text-anchor="end" ${FONT}>${tickLabel(t)}</text>`);
  }
  for (const t of xs) {
    out.push(`<line x1="${num(x(t))}" x2="${num(x(t))}" y1="${y1}" y2="${y0}" stroke="#eee"/>`);
    out.push(`<text x="${num(x(t))}" y="${y0 + 16}" text-anchor="middle" ${FONT}>${tickLabel(t)}</text>`);
  }
  out.push(`<text x="${num((x0 + x1) / 2)}" y="${y0 + 36}" text-anchor="middle" ${FONT}>offered load (req/s)</text>`);
  out.push(`<text transform="translate(${offsetX + 16} ${num((y0 + y1) / 2)}) rotate(-90)" text-anchor="middle" ${FONT}>latency (ms)</text>`);
  for (const s of panel.series) {
    const pts = [...s.points].filter((p) => p.y > 0).sort((a, b) => a.x - b.x);
    if (pts.length === 0) continue;
    const colour = colourOf(s.name);
    const coords = pts.map((p) => `${num(x(p.x))},${num(y(p.y))}`).join(' ');
    out.push(`<polyline points="${coords}" fill="none" stroke="${colour}" stroke-width="2"><title>${escapeXml(s.name)}</title></polyline>`);
    for (const p of pts) out.push(`<circle cx="${num(x(p.x))}" cy="${num(y(p.y))}" r="3.5" fill="${colour}"><title>${escapeXml(`${s.name}: ${p.y} ms at ${p.x} req/s`)}</title></circle>`);
  }
  return out.join('\n');
}

/** A standalone SVG document; panels side by side sharing the y range, a legend of every series below. */
export function renderLatencyChart(panels: readonly Panel[], caption: string): string {
  const names = [...new Set(panels.flatMap((p) => p.series.map((s) => s.name)))];
  const colourOf = (name: string): string => COLOURS[names.indexOf(name) % COLOURS.length]!;
  const all = panels.flatMap((p) => p.series.flatMap((s) => s.points)).filter((p) => p.y > 0);
  const xs = [...new Set(all.map((p) => p.x))].sort((a, b) => a - b);
  const width = PANEL_W * Math.max(1, panels.length);
  const legendRows = Math.ceil(names.length / 4);
  const height = PANEL_H + 16 + legendRows * LEGEND_ROW_H + 24;
  const body: string[] = [];
  if (all.length === 0) {
    body.push(`<text x="${width / 2}" y="${PANEL_H / 2}" text-anchor="middle" ${FONT}>no fixed-rate measurements</text>`);
  } else {
    const ys = all.map((p) => p.y);
    const yRange: [number, number] = [Math.min(...ys) / 1.5, Math.max(...ys) * 1.5];
    panels.forEach((panel, i) => body.push(renderPanel(panel, i * PANEL_W, xs, yRange, colourOf)));
  }
  names.forEach((name, i) => {
    const lx = 24 + (i % 4) * (width / 4);
    const ly = PANEL_H + 16 + Math.floor(i / 4) * LEGEND_ROW_H;
    body.push(`<line x1="${num(lx)}" x2="${num(lx + 24)}" y1="${ly}" y2="${ly}" stroke="${colourOf(name)}" stroke-width="3"/>`);
    body.push(`<text x="${num(lx + 30)}" y="${ly + 4}" ${FONT}>${escapeXml(name)}</text>`);
  });
  body.push(`<text x="${width / 2}" y="${height - 8}" text-anchor="middle" ${FONT} fill="#555">${escapeXml(caption)}</text>`);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
