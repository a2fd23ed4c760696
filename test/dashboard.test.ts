// The dashboard in a real headless Chromium after a real feedback step: the batch is listed, its
// sample (conversation, reply, feedback, teacher context) and metrics show when expanded, versions
// and charts render, no script error occurs; a screenshot is saved. With keys: only an admin key opens it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { buildApp } from '../src/api/app.js';
import { ApiKeys } from '../src/auth/keys.js';
import { tempDir } from '../src/model/random-model.js';
import { TOY_MODEL } from '../src/serve-command.js';
import { openServer } from '../src/serve/open.js';

const artifacts = fileURLToPath(new URL('../test-artifacts', import.meta.url));

test('the dashboard shows a real feedback batch, its sample and metrics, in headless Chromium', async () => {
  const { service, orchestrator } = await openServer(TOY_MODEL, { dataDir: join(tempDir(), 'data'), threads: 2, orchestrator: { batchSize: 1, maxWaitMs: 0 } });
  const app = await buildApp(service, { orchestrator });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const post = async (path: string, body: unknown) => (await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json() as Promise<Record<string, unknown>>;
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  try {
    await post('/v1/lora/init', { lora_id: 'ana/style', rank: 4, alpha: 8 });
    const chat = (await post('/v1/chat/completions', { model: 'ana/style', messages: [{ role: 'user', content: 'What is the opposite of hot?' }], max_tokens: 24, temperature: 0 })) as { id: string; choices: { message: { content: string } }[] };
    const feedback = 'Write in all capitals.';
    const { job_id: jobId } = (await post('/v1/feedback', { lora_id: 'ana/style', completion_id: chat.id, feedback })) as { job_id: string };
    let job = (await orchestrator.jobs.get(jobId))!;
    for (let i = 0; i < 500 && job.status !== 'done' && job.status !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      job = (await orchestrator.jobs.get(jobId))!;
    }
    assert.equal(job.status, 'done', job.error ?? '');
    await post('/v1/eval/runs', { seed: 7, styles: { caps: { before: 0, after: 0.5, events: null } }, retention_delta: 0, control_delta: 0 });

    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));
    const res = await page.goto(`${url}/v1/dashboard`);
    assert.equal(res?.status(), 200);
    const row = page.locator(`[data-test=job-row][data-job="${jobId}"]`);
    await row.waitFor({ timeout: 10_000 });
    assert.match(await row.innerText(), /ana\/style\s+done/);
    await row.click();
    const sample = page.locator('[data-test=sample]').first();
    await sample.waitFor({ timeout: 5000 });
    assert.equal(await page.locator('[data-test=sample-feedback]').first().innerText(), feedback);
    assert.equal(await page.locator('[data-test=sample-reply]').first().innerText(), chat.choices[0]!.message.content);
    assert.match(await page.locator('[data-test=teacher-context]').first().textContent() ?? '', /\[HINDSIGHT CONTEXT\][\s\S]*Write in all capitals\./);
    const loss = (job.result as { metrics: { loss: number } }).metrics.loss;
    assert.equal(Number(await page.locator('[data-test=metric-loss]').first().innerText()), Number(loss.toFixed(4)));
    assert.match(await page.locator('[data-test=guard]').first().innerText(), /guard: (promoted|not promoted)/);
    assert.equal(await page.locator('[data-test=timings]').count(), 1);
    assert.equal(await page.locator('[data-test=version-row]').count(), 2);
    assert.ok((await page.locator('[data-test=chart] polyline').count()) >= 3, 'charts are drawn');
    assert.match(await page.locator('[data-test=eval-run]').first().innerText(), /seed 7: caps 0\.00 → 0\.50/);
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, 'dashboard.png'), fullPage: true });
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await app.close();
    await orchestrator.close();
    await service.close();
  }
});

test('with keys, the dashboard needs an admin key (a browser may pass it once as ?key=), and the key stays out of the logs', async () => {
  const { service, orchestrator } = await openServer(TOY_MODEL, { dataDir: join(tempDir(), 'data'), threads: 1 });
  let logs = '';
  const app = await buildApp(service, { orchestrator, logger: { level: 'info', stream: new Writable({ write: (c, _e, done) => ((logs += c), done()) }) } });
  try {
    const keys = new ApiKeys(service.store.apiKeys);
    const admin = (await keys.create({ tenant: 'ops', role: 'admin' })).key;
    const user = (await keys.create({ tenant: 'ana', role: 'user' })).key;
    assert.equal((await app.inject({ url: '/v1/dashboard' })).statusCode, 401);
    assert.equal((await app.inject({ url: '/v1/dashboard/data' })).statusCode, 401);
    assert.equal((await app.inject({ url: '/v1/dashboard', headers: { authorization: `Bearer ${user}` } })).statusCode, 403);
    assert.equal((await app.inject({ url: `/v1/dashboard?key=${user}` })).statusCode, 403);
    const page = await app.inject({ url: `/v1/dashboard?key=${admin}` });
    assert.equal(page.statusCode, 200);
    assert.match(page.headers['content-type'] as string, /text\/html/);
    assert.equal((await app.inject({ url: `/v1/dashboard/data?key=${admin}` })).statusCode, 401, 'data calls send the key as a header');
    assert.equal((await app.inject({ url: '/v1/dashboard/data', headers: { authorization: `Bearer ${admin}` } })).statusCode, 200);
    assert.ok(logs.includes('/v1/dashboard'));
    assert.ok(!logs.includes(admin.slice(-20)) && !logs.includes(user.slice(-20)), 'no key in the logs');
  } finally {
    await app.close();
    await orchestrator.close();
    await service.close();
  }
});
