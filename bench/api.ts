// What the HTTP layer costs: a 1-token completion through the engine directly, through the serving
// service, and through the API on a loopback socket (tinybench, p50 of each).
// Last line: {"engine_ms", "api_ms", "overhead_ms"} with overhead = api - engine.
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Bench } from 'tinybench';
import { buildApp } from '../src/api/app.js';
import { tempDir } from '../src/model/random-model.js';
import { openInference, writeRandomChatModel } from '../src/serve/open.js';

const { values } = parseArgs({ options: { threads: { type: 'string', default: '2' }, iterations: { type: 'string', default: '2000' } } });
const model = 'random-tiny';
const service = await openInference(writeRandomChatModel(join(tempDir('claas-bench-'), model)), { dataDir: ':memory:', threads: Number(values.threads) });
const app = await buildApp(service);
const base = await app.listen({ host: '127.0.0.1', port: 0 });
const prompt = 'The quick brown fox';
const promptIds = service.tokenizer.encode(prompt, { addSpecialTokens: false });
const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
const body = JSON.stringify({ model, prompt, max_tokens: 1, temperature: 0 });

// A keep-alive client with no parsing of its own, so the client's cost stays small next to the server's.
const agent = new Agent({ keepAlive: true, maxSockets: 1 });
const url = new URL(`${base}/v1/completions`);
const post = () =>
  new Promise<void>((resolve, reject) => {
    const req = request({ agent, host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      res.resume();
      res.on('end', () => resolve());
    });
    req.on('error', reject);
    req.end(body);
  });

const bench = new Bench({ iterations: Number(values.iterations), warmupIterations: 300, time: 0 });
bench
  .add('engine: prefill + 1 token', async () => {
    await service.engine.decode([{ sequence: service.engine.createSequence(0), ids: promptIds, sampling: greedy }]);
  })
  .add('service: 1-token completion (+ record)', async () => {
    await service.complete({ model, prompt, n: 1, maxTokens: 1, temperature: 0, stop: [] });
  })
  .add('HTTP: POST /v1/completions, 1 token', post);
await bench.run();
console.table(bench.table());
const p50 = (i: number) => (bench.tasks[i]!.result as { latency: { p50: number } }).latency.p50;
agent.destroy();
await app.close();
await service.close();
console.log(JSON.stringify({ engine_ms: Number(p50(0).toFixed(4)), service_ms: Number(p50(1).toFixed(4)), api_ms: Number(p50(2).toFixed(4)), overhead_ms: Number((p50(2) - p50(0)).toFixed(4)) }));
