// npm run eval:matrix: the README's learning table. Serves the toy assistant (in this process, on
// loopback, with its training profile) and runs the eval over three seeds for each configuration: the
// profile's defaults (no training options sent, what users get), then α = 0, 0.5 and 1 overriding
// them. Prints per-seed JSON lines, a markdown table of the means, and the means as JSON on the last
// line. EVAL_CONFIGS (defaults,a0,a0.5,a1), EVAL_SEEDS, EVAL_STYLES, EVAL_TEACHER and EVAL_TRAINING (JSON
// options added to every configuration) narrow or change it;
// EVAL_MODEL serves another model folder (a retrained toy) instead of models/toy.
// Feedback events go one at a time and each waits for its update, so batching is set to 1 item with no
// wait: the same update as the default batching gives a lone item, without its 2 s wait.
import { join } from 'node:path';
import { buildApp } from '../src/api/app.js';
import { runEval, type EvalSummary } from '../src/eval/run.js';
import { tempDir } from '../src/model/random-model.js';
import { TOY_MODEL } from '../src/serve-command.js';
import { openServer } from '../src/serve/open.js';
import type { StyleName } from '../src/toy/styles.js';

const CONFIGS: Record<string, Record<string, unknown>> = { defaults: {}, a0: { alpha: 0 }, 'a0.5': { alpha: 0.5 }, a1: { alpha: 1 } };
const configs = (process.env.EVAL_CONFIGS ?? 'defaults,a0,a0.5,a1').split(',');
for (const c of configs) if (!(c in CONFIGS)) throw new Error(`unknown EVAL_CONFIGS entry ${c} (known: ${Object.keys(CONFIGS).join(', ')})`);
const seeds = (process.env.EVAL_SEEDS ?? '1,2,3').split(',').map(Number);
const styles = (process.env.EVAL_STYLES ?? 'caps,oneline,name,signoff').split(',') as StyleName[];
const teacher = process.env.EVAL_TEACHER ? { teacher: process.env.EVAL_TEACHER } : {};
// Training options added to every configuration's (a JSON object), to measure a candidate profile.
const extra = JSON.parse(process.env.EVAL_TRAINING ?? '{}') as Record<string, unknown>;
const t0 = performance.now();

const model = process.env.EVAL_MODEL ?? TOY_MODEL;
const { service, orchestrator } = await openServer(model, { dataDir: join(tempDir(), 'data'), orchestrator: { batchSize: 1, maxWaitMs: 0 } });
const app = await buildApp(service, { orchestrator });
const url = await app.listen({ host: '127.0.0.1', port: 0 });
const defaults = orchestrator.effectiveDefaults();
console.log(`training defaults: ${JSON.stringify(defaults)}`);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const rows: Record<string, unknown>[] = [];
try {
  for (const config of configs) {
    const runs: EvalSummary[] = [];
    const training = { ...extra, ...CONFIGS[config], ...teacher };
    for (const seed of seeds) {
      const s = await runEval({ url, styles, events: 8, every: 1, probes: 100, openProbes: 40, target: 0.95, seed, training, log: () => {} });
      runs.push(s);
      console.log(JSON.stringify({ config, training, seed, ...Object.fromEntries(styles.map((st) => [st, { before: s.styles[st]!.before, after: s.styles[st]!.after, events: s.styles[st]!.events }])), base_accuracy: s.base.accuracy, retention_delta: s.retention_delta, control_delta: s.control_delta, distinct2_ratio: s.distinct2_ratio, entropy_ratio: s.entropy_ratio, max_kl_to_base: s.max_kl_to_base, sequence: s.sequence, refused: s.refused, events_given: s.events_given, seconds: s.seconds }));
    }
    const row: Record<string, unknown> = { config, training };
    for (const st of styles) {
      const rs = runs.map((r) => r.styles[st]!);
      row[st] = { before: mean(rs.map((r) => r.before)), after: mean(rs.map((r) => r.after)), events: rs.map((r) => r.events) };
    }
    row.base_accuracy = mean(runs.map((r) => r.base.accuracy));
    row.retention_delta = mean(runs.map((r) => r.retention_delta));
    row.control_delta = mean(runs.map((r) => r.control_delta));
    row.distinct2_ratio = mean(runs.map((r) => r.distinct2_ratio));
    row.entropy_ratio = mean(runs.map((r) => r.entropy_ratio));
    row.max_kl_to_base = Math.max(...runs.map((r) => r.max_kl_to_base));
    row.sequence_min_after_all = mean(runs.map((r) => r.sequence?.min_after_all ?? NaN));
    row.sequence_worst_seed = Math.min(...runs.map((r) => r.sequence?.min_after_all ?? NaN));
    row.sequence_accuracy = mean(runs.map((r) => r.sequence?.accuracy ?? NaN));
    row.refused = runs.reduce((a, r) => a + r.refused, 0);
    row.events_given = runs.reduce((a, r) => a + r.events_given, 0);
    row.seconds = runs.reduce((a, r) => a + r.seconds, 0);
    rows.push(row);
  }
} finally {
  await app.close();
  await orchestrator.close();
  await service.close();
}
const f = (x: number) => x.toFixed(2);
console.log(`\n| config | ${styles.map((s) => `${s}: before → after (events)`).join(' | ')} | accuracy Δ | control Δ | distinct-2 ratio | entropy ratio | max KL to base | all ${styles.length} in sequence: min at end (worst seed) | refused updates |`);
console.log(`|---|${styles.map(() => '---').join('|')}|---|---|---|---|---|---|---|`);
for (const r of rows) {
  const cells = styles.map((st) => {
    const c = r[st] as { before: number; after: number; events: (number | null)[] };
    return `${f(c.before)} → ${f(c.after)} (${c.events.map((e) => e ?? '>8').join(', ')})`;
  });
  console.log(`| ${r.config as string} | ${cells.join(' | ')} | ${f(r.retention_delta as number)} | ${f(r.control_delta as number)} | ${f(r.distinct2_ratio as number)} | ${f(r.entropy_ratio as number)} | ${f(r.max_kl_to_base as number)} | ${f(r.sequence_min_after_all as number)} (${f(r.sequence_worst_seed as number)}) | ${r.refused as number} of ${r.events_given as number} |`);
}
console.log(JSON.stringify({ defaults, rows, seconds: Math.round((performance.now() - t0) / 1000) }));
