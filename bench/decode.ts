// Greedy decoding speed with a KV cache, batch 1: the engine against the PyTorch reference's cached
// decode on the same model, same threads. Both must produce the same tokens (checked), so the two
// really do the same work. Last line: {"ours_tok_s", "torch_tok_s"}.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from '../src/engine/engine.js';
import { rng, tempDir, writeRandomModel } from '../src/model/random-model.js';
import { BENCH_MODEL } from './step-sample.js';

const { values } = parseArgs({ options: { threads: { type: 'string', default: '2' }, tokens: { type: 'string', default: '128' }, python: { type: 'string', default: '/usr/bin/python3' } } });
const threads = Number(values.threads);
const newTokens = Number(values.tokens);
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const modelDir = writeRandomModel(BENCH_MODEL, join(tempDir('claas-bench-'), 'model'));
const r = rng(3);
const prompt = Array.from({ length: 32 }, () => Math.floor(r() * BENCH_MODEL.vocab!));
console.log(`model: ${JSON.stringify(BENCH_MODEL)}; prompt ${prompt.length} tokens, ${newTokens} new tokens, greedy, batch 1, threads ${threads}`);

const engine = await Engine.open(modelDir, { backend: 'cpu', threads });
const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
const run = async () => {
  const seq = engine.createSequence(0);
  let t = (await engine.decode([{ sequence: seq, ids: prompt, sampling: greedy }]))[0]!;
  const ids = [t.id];
  const t0 = performance.now();
  while (ids.length <= newTokens) {
    t = (await engine.decode([{ sequence: seq, ids: [t.id], sampling: greedy }]))[0]!;
    ids.push(t.id);
  }
  return { tokS: newTokens / ((performance.now() - t0) / 1000), ids: ids.slice(0, newTokens) };
};
await run(); // warm-up
const runs = [await run(), await run(), await run()];
const ours = runs.map((x) => x.tokS).sort((a, b) => a - b)[1]!;
console.log(`engine: ${runs.map((x) => x.tokS.toFixed(0)).join(', ')} tok/s (median ${ours.toFixed(0)})`);

const py = spawnSync(values.python, [join(root, 'test', 'reference', 'bench_decode.py'), modelDir, prompt.join(','), String(newTokens), String(threads)], {
  encoding: 'utf8',
  env: { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) },
});
if (py.status !== 0) throw new Error(`the PyTorch decode failed: ${py.stderr}`);
const torch = JSON.parse(py.stdout.trim().split('\n').pop()!) as { tok_s: number; ids: number[] };
console.log(`PyTorch reference: ${torch.tok_s.toFixed(0)} tok/s`);
const same = torch.ids.every((id, i) => id === runs[0]!.ids[i]);
console.log(same ? 'both produced the same tokens' : `WARNING: the token streams differ (first difference at ${torch.ids.findIndex((id, i) => id !== runs[0]!.ids[i])})`);
console.log(JSON.stringify({ ours_tok_s: Number(ours.toFixed(1)), torch_tok_s: Number(torch.tok_s.toFixed(1)), same_tokens: same, threads }));
