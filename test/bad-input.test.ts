// Bad input raises a typed error with a message that says what was wrong; the process keeps going.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Engine } from '../src/engine/engine.js';
import { AdapterError, ConfigError, InputError, ShapeError, WeightsError } from '../src/errors.js';
import { tempDir, writeRandomModel } from '../src/model/random-model.js';

function copyModel(src: string): string {
  const dir = join(tempDir(), 'model');
  mkdirSync(dir);
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(src, f), join(dir, f));
  return dir;
}

const good = writeRandomModel({ seed: 21 });

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(c);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
}

test('missing or corrupt weights give WeightsError', async () => {
  const missing = copyModel(good);
  rmSync(join(missing, 'model.safetensors'));
  await assert.rejects(Engine.open(missing), (e: unknown) => e instanceof WeightsError && /neither model\.safetensors/.test(e.message));

  const corrupt = copyModel(good);
  const buf = readFileSync(join(corrupt, 'model.safetensors'));
  buf.writeBigUInt64LE(1n << 40n, 0);
  writeFileSync(join(corrupt, 'model.safetensors'), buf);
  await assert.rejects(Engine.open(corrupt), (e: unknown) => e instanceof WeightsError && /corrupt safetensors header/.test(e.message));

  const garbage = copyModel(good);
  const g = readFileSync(join(garbage, 'model.safetensors'));
  g.fill(0x7b, 8, 40); // "{{{{..." is not JSON
  writeFileSync(join(garbage, 'model.safetensors'), g);
  await assert.rejects(Engine.open(garbage), (e: unknown) => e instanceof WeightsError && /not JSON/.test(e.message));

  const truncated = copyModel(good);
  const t = readFileSync(join(truncated, 'model.safetensors'));
  writeFileSync(join(truncated, 'model.safetensors'), t.subarray(0, t.length - 100));
  await assert.rejects(Engine.open(truncated), (e: unknown) => e instanceof WeightsError && /outside the file/.test(e.message));
});

test('unsupported config values give ConfigError naming the field', async () => {
  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    ['model_type', (c) => (c.model_type = 'gpt2'), /model_type "gpt2" is not supported/],
    ['hidden_act', (c) => (c.hidden_act = 'gelu'), /hidden_act/],
    ['rope_scaling', (c) => (c.rope_scaling = { rope_type: 'yarn', factor: 4 }), /rope_scaling "yarn"/],
    ['heads', (c) => (c.num_key_value_heads = 3), /multiple of num_key_value_heads/],
    ['hidden_size', (c) => (c.hidden_size = -4), /hidden_size must be a positive integer/],
  ];
  for (const [name, edit, message] of cases) {
    const dir = copyModel(good);
    editConfig(dir, edit);
    await assert.rejects(Engine.open(dir), (e: unknown) => e instanceof ConfigError && message.test(e.message), name);
  }
  const notJson = copyModel(good);
  writeFileSync(join(notJson, 'config.json'), '{ nope');
  await assert.rejects(Engine.open(notJson), ConfigError);
});

test('a tensor whose shape disagrees with config.json gives ShapeError', async () => {
  const dir = copyModel(good);
  editConfig(dir, (c) => (c.intermediate_size = 50));
  await assert.rejects(Engine.open(dir), (e: unknown) => e instanceof ShapeError && /mlp\.gate_proj\.weight has shape \[48, 32\], config\.json implies \[50, 32\]/.test(e.message));
});

test('bad adapter and step arguments give typed errors', async () => {
  const engine = await Engine.open(good, { backend: 'cpu', threads: 1 });
  assert.throws(() => engine.createAdapter({ targetModules: ['q_proj', 'lm_head'] }), (e: unknown) => e instanceof AdapterError && /unknown target module "lm_head"/.test(e.message));
  assert.throws(() => engine.createAdapter({ rank: 0 }), InputError);
  const adapter = engine.createAdapter({ rank: 2, alpha: 4, seed: 1 });
  const sample = { promptIds: [1, 2, 3], teacherPromptIds: [1, 2, 9, 3], responseIds: [4, 5] };
  await assert.rejects(engine.sdpoStep(adapter, [{ ...sample, responseIds: [] }]), (e: unknown) => e instanceof InputError && /responseIds is empty/.test(e.message));
  await assert.rejects(engine.sdpoStep(adapter, [sample], { learningRate: NaN }), (e: unknown) => e instanceof InputError && /learningRate/.test(e.message));
  await assert.rejects(engine.sdpoStep(adapter, [sample], { learningRate: Infinity }), InputError);
  await assert.rejects(engine.sdpoStep(adapter, [{ ...sample, responseIds: [4, 64] }]), (e: unknown) => e instanceof InputError && /not a token id in \[0, 64\)/.test(e.message));
  await assert.rejects(engine.sdpoStep(adapter, [{ ...sample, oldLogprobs: [-1] }]), (e: unknown) => e instanceof InputError && /oldLogprobs/.test(e.message));
  await assert.rejects(engine.sdpoStep(adapter, []), InputError);
  await assert.rejects(engine.sdpoStep(adapter, [sample], { teacher: 'remote' as never }), InputError);
  await assert.rejects(engine.logits([]), InputError);

  // A PEFT folder naming a module the engine does not know.
  const dir = join(tempDir(), 'adapter');
  await engine.saveAdapter(adapter, dir);
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  cfg.target_modules = ['q_proj', 'embed_tokens'];
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
  await assert.rejects(engine.loadAdapter(dir), (e: unknown) => e instanceof AdapterError && /embed_tokens/.test(e.message));

  // After all of that the engine still works.
  const r = await engine.sdpoStep(adapter, [sample], { learningRate: 1e-3, topK: 4 });
  assert.ok(Number.isFinite(r.loss));
});

test('the native layer rejects what would crash it even without the TypeScript checks', async () => {
  const engine = await Engine.open(good, { backend: 'cpu', threads: 1 });
  const native = (engine as unknown as { model: { forward(ids: unknown, a: unknown, e: boolean): Promise<unknown> } }).model;
  assert.throws(() => native.forward(new Int32Array([1, 99999]), null, false), /outside the vocabulary/);
  assert.throws(() => native.forward([1, 2], null, false), /must be an Int32Array/);
  assert.throws(() => native.forward(new Int32Array([1]), { not: 'an adapter' }, false), /NativeAdapter/);
});
