// npm run toy:measure: what the toy assistant does before any adapter, on 60 held-out tasks (greedy
// unless said): without a block (accuracy, the default style), with a block asking for each style (the
// style, accuracy), with its reply forced to start in a style nobody asked for (accuracy: what an
// adapter's reply inherits), and sampled without a block, at temperature 1 and as the server samples
// for users (how often a style shows unasked). Serves the model in this process and asks over HTTP
// like any client. Last line: JSON.
//   node dist/bench/toy-behaviour.js [model folder (default models/toy)]
import { join } from 'node:path';
import { buildApp } from '../src/api/app.js';
import { EvalClient } from '../src/eval/client.js';
import { ChatTemplate } from '../src/model/chat-template.js';
import { tempDir } from '../src/model/random-model.js';
import { TOY_MODEL } from '../src/serve-command.js';
import { openServer } from '../src/serve/open.js';
import { hindsightMessages } from '../src/train/hindsight.js';
import { STYLES, STYLE_NAMES, isDefault, type StyleName } from '../src/toy/styles.js';
import { answered, taskSet } from '../src/toy/tasks.js';

const model = process.argv[2] ?? TOY_MODEL;
const { service, orchestrator } = await openServer(model, { dataDir: join(tempDir(), 'data') });
const app = await buildApp(service, { orchestrator });
const client = new EvalClient(await app.listen({ host: '127.0.0.1', port: 0 }));
const template = ChatTemplate.fromDir(model);
const tasks = taskSet(777, 60);
const base = await client.baseModel();

type Messages = { role: 'user'; content: string }[];
async function reply(messages: Messages, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await client.call<{ choices: { message: { content: string | null } }[] }>('POST', '/v1/chat/completions', { model: base, messages, max_tokens: 48, temperature: 0, ...extra });
  return r.choices[0]!.message.content ?? '';
}
/** Greedy, after the chat rendering and `prefix`: the reply made to start in a style. */
async function forced(prompt: string, prefix: string): Promise<string> {
  const text = template.render([{ role: 'user', content: prompt }], { addGenerationPrompt: true, enableThinking: false }) + prefix;
  const r = await client.call<{ choices: { text: string }[] }>('POST', '/v1/completions', { model: base, prompt: text, max_tokens: 48, temperature: 0 });
  return prefix + r.choices[0]!.text;
}
const share = (xs: boolean[]) => xs.filter(Boolean).length / xs.length;

try {
  const plain = await Promise.all(tasks.map((t) => reply([{ role: 'user', content: t.prompt }])));
  const result: Record<string, unknown> = {
    model,
    tasks: tasks.length,
    plain: { accuracy: share(tasks.map((t, i) => answered(t, plain[i]!))), default_style: share(plain.map(isDefault)) },
  };
  const asked: Record<string, unknown> = {};
  for (const s of STYLE_NAMES) {
    const rs = await Promise.all(tasks.map((t) => reply(hindsightMessages([{ role: 'user', content: t.prompt }], STYLES[s].feedback.train[0]!) as Messages)));
    asked[s] = { style: share(rs.map((r) => STYLES[s].verify(r))), accuracy: share(tasks.map((t, i) => answered(t, rs[i]!))) };
  }
  result.block = asked;
  // The styles decided by the reply's first line (the sign-off is decided at its end; one line by the
  // token after the greeting, " word", which a text prefix ending in a space cannot force).
  const prefixes: Partial<Record<StyleName, string>> = { caps: 'HI THERE!\n', name: 'Hi Ana!\n' };
  const unasked: Record<string, number> = {};
  const misses: string[] = [];
  for (const [s, prefix] of Object.entries(prefixes)) {
    const rs = await Promise.all(tasks.map((t) => forced(t.prompt, prefix)));
    unasked[s] = share(tasks.map((t, i) => answered(t, rs[i]!)));
    tasks.forEach((t, i) => answered(t, rs[i]!) || misses.push(`${s}: ${t.prompt} -> ${JSON.stringify(rs[i])}`));
  }
  result.forced_unasked_accuracy = unasked;
  /** Share of 200 seeded samples (over the tasks, no block) that carry some style. */
  const styledShare = async (temperature: number | undefined) => {
    const rs = await Promise.all(Array.from({ length: 200 }, (_, i) => reply([{ role: 'user', content: tasks[i % tasks.length]!.prompt }], { temperature, seed: 500 + i })));
    return share(rs.map((r) => STYLE_NAMES.some((s) => STYLES[s].verify(r))));
  };
  result.sampled_t1_styled = await styledShare(1);
  // As users get replies: the model's generation_config (no temperature sent).
  result.sampled_served_styled = await styledShare(undefined);
  for (const m of misses.slice(0, 12)) console.log(m);
  console.log(JSON.stringify(result));
} finally {
  await app.close();
  await orchestrator.close();
  await service.close();
}
