// compose.yaml and the Containerfile, read as files (no containers): the profiles hold the services the
// README says, the gpu profile starts vLLM with what our vLLM client needs (LoRA, runtime adapter
// loading, sleep mode, enough LoRA rank, adapter slots and logprobs for our training defaults) and
// shares claas's adapter folders with it at the same path, every service has init and a healthcheck,
// and the image is multi-stage, non-root, with a data volume and a pullable default base.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { ruleProfile } from '../src/model/training-profile.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface Service {
  image?: string;
  profiles?: string[];
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  init?: boolean;
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
}

/** Compose's variable syntax with an empty environment: ${X:-default} → default, ${X:?msg} and ${X} → ''. */
function interpolate(v: unknown): unknown {
  if (typeof v === 'string') return v.replace(/\$\{(\w+)(?::?([-?])([^}]*))?\}/g, (_, _name: string, op?: string, arg?: string) => (op === '-' ? (arg ?? '') : ''));
  if (Array.isArray(v)) return v.map(interpolate);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, interpolate(x)]));
  return v;
}

const compose = interpolate(parse(readFileSync(join(root, 'compose.yaml'), 'utf8'), { merge: true })) as { services: Record<string, Service>; volumes: Record<string, unknown> };
const services = compose.services;
const inProfile = (p: string) => Object.keys(services).filter((name) => services[name]!.profiles?.includes(p)).sort();

/** The value after a flag in a command list (`--flag value`), or undefined. */
function flag(cmd: string[], name: string): string | undefined {
  const i = cmd.indexOf(name);
  return i >= 0 ? cmd[i + 1] : undefined;
}

test('the profiles: cpu is claas and a gateway, gpu is vLLM, claas through it, and a gateway', () => {
  assert.deepEqual(inProfile('cpu'), ['claas', 'gateway']);
  assert.deepEqual(inProfile('gpu'), ['claas-gpu', 'gateway-gpu', 'vllm']);
  for (const [name, s] of Object.entries(services)) {
    assert.ok(s.healthcheck?.test.length, `${name} has a healthcheck`);
    if (name !== 'vllm') assert.equal(s.init, true, `${name} runs under an init (fast, clean stop)`);
  }
});

test('the gpu profile starts vLLM with what the vLLM client needs', () => {
  const vllm = services.vllm!;
  const cmd = vllm.command!;
  const env = vllm.environment!;
  assert.match(vllm.image!, /^docker\.io\/vllm\/vllm-openai:/, "vLLM's official OpenAI server image");
  assert.ok(cmd.includes('--enable-lora'), '--enable-lora');
  assert.ok(cmd.includes('--enable-sleep-mode'), '--enable-sleep-mode (POST /sleep before each update)');
  assert.match(env.VLLM_ALLOW_RUNTIME_LORA_UPDATING ?? '', /^(1|true|True)$/, 'runtime LoRA loading (/v1/load_lora_adapter)');
  assert.equal(env.VLLM_SERVER_DEV_MODE, '1', '/sleep, /wake_up and /is_sleeping are exposed');
  const defaults = ruleProfile(4096);
  const toy = JSON.parse(readFileSync(join(root, 'models', 'toy', 'training_profile.json'), 'utf8')) as { lora?: { rank?: number } };
  const rank = Number(flag(cmd, '--max-lora-rank'));
  assert.ok(rank >= defaults.lora.rank && rank >= (toy.lora?.rank ?? 0), `--max-lora-rank ${rank} holds new adapters' default rank ${defaults.lora.rank}`);
  // An update loads the new version before unloading the old one, so two must fit at once.
  assert.ok(Number(flag(cmd, '--max-loras')) >= 2, '--max-loras >= 2');
  assert.ok(Number(flag(cmd, '--max-logprobs')) >= defaults.training.topK, `--max-logprobs >= the teacher's default top-K (${defaults.training.topK})`);

  const claas = services['claas-gpu']!;
  const port = flag(cmd, '--port') ?? '8000';
  assert.equal(claas.environment!.CLAAS_VLLM_URL, `http://vllm:${port}`, 'claas serves through this vLLM');
  assert.equal(claas.depends_on?.vllm?.condition, 'service_healthy');
  // vLLM loads each version from the lora_path claas sends: claas's data must be at the same path.
  const dataOf = (s: Service) => s.volumes!.map((v) => v.split(':')).find(([, target]) => target === '/data');
  assert.equal(dataOf(vllm)?.[0], dataOf(claas)?.[0], "vLLM mounts claas's data volume at /data too");
  const modelOf = (s: Service) => s.volumes!.map((v) => v.split(':')).find(([, target]) => target === '/model')?.[0];
  assert.equal(flag(cmd, '--model'), '/model');
  assert.equal(claas.environment!.CLAAS_MODEL, '/model');
  assert.equal(modelOf(vllm), modelOf(claas), 'vLLM serves the base model claas trains on');
});

test('the gateways chat through their profile\'s claas and need a token; Telegram comes from the environment', () => {
  for (const [gateway, claas] of [['gateway', 'claas'], ['gateway-gpu', 'claas-gpu']] as const) {
    const env = services[gateway]!.environment!;
    assert.equal(env.CLAAS_URL, `http://${claas}:8000`);
    assert.ok('OPENCLAW_GATEWAY_TOKEN' in env && 'TELEGRAM_BOT_TOKEN' in env);
    const data = services[claas]!.volumes!.find((v) => v.endsWith(':/data'))!.split(':')[0];
    assert.ok(services[gateway]!.volumes!.includes(`${data}:/claas-data:ro`), `${gateway} reads the tenant key from ${claas}'s volume`);
  }
});

test('the Containerfile: multi-stage, a pullable default base, non-root, a data volume, a healthcheck, the toy by default', () => {
  const text = readFileSync(join(root, 'Containerfile'), 'utf8');
  assert.match(text, /^ARG BASE_IMAGE=docker\.io\/library\/debian:bookworm-slim$/m);
  assert.ok((text.match(/^FROM /gm) ?? []).length >= 3, 'several stages');
  const claasStage = text.slice(text.lastIndexOf('FROM runtime AS claas'));
  assert.match(text, /^USER claas$/m);
  assert.match(claasStage, /^VOLUME \/data$/m);
  assert.match(claasStage, /^HEALTHCHECK /m);
  assert.match(claasStage, /^CMD \["serve"\]$/m, 'serve with no --model: the toy shipped in the package');
  assert.ok(text.trimEnd().endsWith('CMD ["serve"]'), 'the last stage (the default target) is the server');
});
