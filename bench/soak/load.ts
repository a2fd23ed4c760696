// Load: many concurrent streamed chats on an adapter (autocannon) while feedback arrives every
// second and updates run; reports latency percentiles, 5xx, feedback acknowledged and versions made.
import autocannon from 'autocannon';
import { join } from 'node:path';
import { post, sleep, startServer } from './server.js';

export interface LoadResult {
  requests: number;
  errors_5xx: number;
  non_2xx: number;
  timeouts: number;
  p50_ms: number;
  p99_ms: number;
  req_per_s: number;
  feedback_acked: number;
  feedback_errors: number;
  updates_applied: number;
}

export async function runLoad(dir: string, seconds: number, connections: number): Promise<LoadResult> {
  const server = await startServer(join(dir, 'load'), ['--batch-size', '4', '--batch-wait-ms', '1000', '--max-tokens', '64', '--rate-chat', '0', '--rate-feedback', '0']);
  try {
    const adapter = 'soak/load';
    if ((await post(`${server.url}/v1/lora/init`, { lora_id: adapter, rank: 8, alpha: 16 })).status !== 201) throw new Error('could not create the soak adapter');
    let stop = false;
    let acked = 0;
    let feedbackErrors = 0;
    const feedback = (async () => {
      for (let i = 0; !stop; i++) {
        const t0 = Date.now();
        const r = await post(`${server.url}/v1/feedback`, { lora_id: adapter, messages: [{ role: 'user', content: `question ${i}` }], response: `an answer ${i}`, feedback: 'Be briefer.' }).catch(() => ({ status: 0 }));
        if (r.status === 202) acked++;
        else feedbackErrors++;
        await sleep(Math.max(0, 1000 - (Date.now() - t0)));
      }
    })();
    const result = await autocannon({
      url: `${server.url}/v1/chat/completions`,
      method: 'POST',
      connections,
      duration: seconds,
      timeout: 60,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: adapter, messages: [{ role: 'user', content: 'Tell me about the sea.' }], max_tokens: 16, temperature: 0.8, stream: true }),
    });
    stop = true;
    await feedback;
    // Let the queued updates finish (bounded).
    let versions = 0;
    for (let i = 0; i < 120; i++) {
      const info = (await (await fetch(`${server.url}/v1/lora/${adapter}`)).json()) as { versions: { status: string }[] };
      versions = info.versions.length - 1;
      const jobs = await fetch(`${server.url}/metrics`).then((r) => r.text());
      if (!/claas_active_generations [1-9]/.test(jobs) && versions >= Math.ceil(acked / 4) - 1) break;
      await sleep(1000);
    }
    return {
      requests: result.requests.total,
      errors_5xx: result['5xx'],
      non_2xx: result.non2xx,
      timeouts: result.timeouts,
      p50_ms: result.latency.p50,
      p99_ms: result.latency.p99,
      req_per_s: result.requests.average,
      feedback_acked: acked,
      feedback_errors: feedbackErrors,
      updates_applied: versions,
    };
  } finally {
    await server.stop();
  }
}
