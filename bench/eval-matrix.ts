// npm run eval:matrix: the README's learning table. Serves the toy assistant (in this process, on
// loopback) and runs the eval for each teacher mode over three seeds; prints per-seed JSON lines, a
// markdown table of the means, and the means as JSON on the last line. EVAL_LR and EVAL_TRAIN_STEPS
// override the eval's learning rate and optimizer steps per event.
import { join } from 'node:path';
import { buildApp } from '../src/api/app.js';
import { EVAL_RANK, EVAL_TRAINING, runEval, type EvalSummary } from '../src/eval/run.js';
import { tempDir } from '../src/model/random-model.js';
import { TOY_MODEL } from '../src/serve-command.js';
import { openServer } from '../src/serve/open.js';
import type { StyleName } from '../src/toy/styles.js';

const teachers = (process.env.EVAL_TEACHERS ?? 'current,base,ema').split(',');
const seeds = (process.env.EVAL_SEEDS ?? '1,2,3').split(',').map(Number);
const styles = (process.env.EVAL_STYLES ?? 'caps,oneline,name,signoff').split(',') as StyleName[];
const training = { ...EVAL_TRAINING, ...(process.env.EVAL_LR ? { learning_rate: Number(process.env.EVAL_LR) } : {}), ...(process.env.EVAL_TRAIN_STEPS ? { steps: Number(process.env.EVAL_TRAIN_STEPS) } : {}) };
const t0 = performance.now();

const { service, orchestrator } = await openServer(TOY_MODEL, { dataDir: join(tempDir(), 'data'), threads: 2, orchestrator: { batchSize: 1, maxWaitMs: 0 } });
const app = await buildApp(service, { orchestrator });
const url = await app.listen({ host: '127.0.0.1', port: 0 });
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const rows: Record<string, unknown>[] = [];
try {
  for (const teacher of teachers) {
    const runs: EvalSummary[] = [];
    for (const seed of seeds) {
      const s = await runEval({ url, styles, events: 8, every: 1, probes: 20, target: 0.95, seed, rank: EVAL_RANK, training: { ...training, teacher }, log: () => {} });
      runs.push(s);
      console.log(JSON.stringify({ teacher, seed, ...Object.fromEntries(styles.map((st) => [st, { before: s.styles[st]!.before, after: s.styles[st]!.after, events: s.styles[st]!.events }])), retention_delta: s.retention_delta, control_delta: s.control_delta, distinct2_ratio: s.distinct2_ratio, entropy_ratio: s.entropy_ratio, max_kl_to_base: s.max_kl_to_base, sequence: s.sequence, seconds: s.seconds }));
    }
    const row: Record<string, unknown> = { teacher };
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
    row.first_after_three = mean(runs.map((r) => r.sequence?.first_after_all ?? NaN));
    row.last_after_three = mean(runs.map((r) => r.sequence?.last ?? NaN));
    row.seconds = runs.reduce((a, r) => a + r.seconds, 0);
    rows.push(row);
  }
} finally {
  await app.close();
  await orchestrator.close();
  service.close();
}
const f = (x: number) => x.toFixed(2);
console.log(`\n| teacher | ${styles.map((s) => `${s}: before → after (events)`).join(' | ')} | accuracy Δ | control Δ | distinct-2 ratio | entropy ratio | max KL to base | 1st style after 3 | 3rd style after 3 |`);
console.log(`|---|${styles.map(() => '---').join('|')}|---|---|---|---|---|---|---|`);
for (const r of rows) {
  const cells = styles.map((st) => {
    const c = r[st] as { before: number; after: number; events: (number | null)[] };
    return `${f(c.before)} → ${f(c.after)} (${c.events.map((e) => e ?? '>8').join(', ')})`;
  });
  console.log(`| ${r.teacher as string} | ${cells.join(' | ')} | ${f(r.retention_delta as number)} | ${f(r.control_delta as number)} | ${f(r.distinct2_ratio as number)} | ${f(r.entropy_ratio as number)} | ${f(r.max_kl_to_base as number)} | ${f(r.first_after_three as number)} | ${f(r.last_after_three as number)} |`);
}
console.log(JSON.stringify({ rows, seconds: Math.round((performance.now() - t0) / 1000) }));
