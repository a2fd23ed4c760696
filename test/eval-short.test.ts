// A shortened `claas eval` against the shipped toy assistant, as a regression guard on learning: all
// capitals goes from absent to at least half of the held-out probes within 8 feedback events, the
// brief style's log-prob margin rises, and unrelated feedback changes nothing. (The full targets —
// >= 95 % without losing accuracy — are not met yet; see the README's table.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { buildApp } from '../src/api/app.js';
import { runEval } from '../src/eval/run.js';
import { tempDir } from '../src/model/random-model.js';
import { TOY_MODEL } from '../src/serve-command.js';
import { openServer } from '../src/serve/open.js';

test('feedback moves the toy assistant toward a style within 8 events, and unrelated feedback changes nothing', async () => {
  const { service, orchestrator } = await openServer(TOY_MODEL, { dataDir: join(tempDir(), 'data'), threads: 2, orchestrator: { batchSize: 1, maxWaitMs: 0 } });
  const app = await buildApp(service, { orchestrator });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const lines: string[] = [];
    const summary = await runEval({
      url,
      styles: ['caps', 'brief'],
      events: 8,
      every: 2,
      probes: 12,
      target: 0.95,
      seed: 4,
      rank: 8,
      training: { learning_rate: 1e-3, steps: 2, alpha: 0 },
      log: (l) => lines.push(l),
    });
    const detail = lines.join('\n');
    assert.ok(summary.base.accuracy >= 0.8, `the toy model solves its tasks (${summary.base.accuracy})\n${detail}`);
    const caps = summary.styles.caps!;
    assert.ok(caps.before <= 0.1, `caps is not there before feedback (${caps.before})\n${detail}`);
    assert.ok(caps.after >= 0.5, `caps reaches half of the probes within 8 events (${caps.after})\n${detail}`);
    const brief = summary.styles.brief!.curve;
    assert.ok(brief.at(-1)!.margin! - brief[0]!.margin! >= 5, `the brief reply gains log-prob against the default one (${brief[0]!.margin} -> ${brief.at(-1)!.margin})\n${detail}`);
    assert.ok(summary.control_delta <= 0.05, `unrelated feedback changes nothing (${summary.control_delta})\n${detail}`);
    const runs = (await (await fetch(`${url}/v1/eval/runs`)).json()) as { data: { summary: { seed: number; styles: Record<string, unknown> } }[] };
    assert.equal(runs.data[0]!.summary.seed, 4, 'the server keeps the run for the dashboard');
    assert.deepEqual(Object.keys(runs.data[0]!.summary.styles), ['caps', 'brief']);
  } finally {
    await app.close();
    await orchestrator.close();
    service.close();
  }
});
