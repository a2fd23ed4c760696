// An SVG line chart of adherence against feedback events, one line per style (no dependencies).
import type { EvalSummary } from './run.js';

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];

export function adherenceSvg(summary: EvalSummary): string {
  const W = 560;
  const H = 320;
  const m = { l: 50, r: 120, t: 20, b: 40 };
  const styles = Object.entries(summary.styles);
  const maxE = Math.max(1, ...styles.flatMap(([, r]) => r!.curve.map((p) => p.events)));
  const x = (e: number) => m.l + (e / maxE) * (W - m.l - m.r);
  const y = (a: number) => H - m.b - a * (H - m.t - m.b);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  for (const a of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y(a)}" y2="${y(a)}" stroke="#ddd"/><text x="${m.l - 8}" y="${y(a) + 4}" text-anchor="end">${a}</text>`);
  }
  for (let e = 0; e <= maxE; e++) parts.push(`<text x="${x(e)}" y="${H - m.b + 16}" text-anchor="middle">${e}</text>`);
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 6}" text-anchor="middle">feedback events</text>`);
  parts.push(`<text x="14" y="${(m.t + H - m.b) / 2}" transform="rotate(-90 14 ${(m.t + H - m.b) / 2})" text-anchor="middle">adherence (held-out probes)</text>`);
  styles.forEach(([name, r], i) => {
    const c = COLOURS[i % COLOURS.length];
    const pts = r!.curve.map((p) => `${x(p.events).toFixed(1)},${y(p.adherence).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>`);
    for (const p of r!.curve) parts.push(`<circle cx="${x(p.events).toFixed(1)}" cy="${y(p.adherence).toFixed(1)}" r="3" fill="${c}"/>`);
    parts.push(`<text x="${W - m.r + 10}" y="${m.t + 16 * (i + 1)}" fill="${c}">${name}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}
