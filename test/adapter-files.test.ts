// Adapters on disk in PEFT format: names, config, round trip, immutability.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Engine, loraSlots } from '../src/engine/engine.js';
import { readSafetensorsHeader } from '../src/model/safetensors.js';
import { AdapterError } from '../src/errors.js';
import { tempDir, writeRandomModel } from '../src/model/random-model.js';

const sample = { promptIds: [4, 5, 6, 7], teacherPromptIds: [4, 5, 30, 31, 6, 7], responseIds: [9, 10, 1] };

test('a saved adapter has PEFT key names and config, and reloads to identical logits and state', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 3, tied: false }), { backend: 'cpu', threads: 2 });
  const adapter = engine.createAdapter({ rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], seed: 5 });
  await engine.sdpoStep(adapter, [sample], { learningRate: 1e-2, topK: 8 });
  await engine.sdpoStep(adapter, [sample], { learningRate: 1e-2, topK: 8 });
  const dir = join(tempDir(), 'adapters', 'v1');
  await engine.saveAdapter(adapter, dir);

  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.task_type, 'CAUSAL_LM');
  assert.equal(cfg.r, 4);
  assert.equal(cfg.lora_alpha, 8);
  assert.deepEqual(cfg.target_modules, ['q_proj', 'v_proj', 'down_proj']);
  const names = [...readSafetensorsHeader(join(dir, 'adapter_model.safetensors')).tensors.keys()].sort();
  const expected: string[] = [];
  for (let l = 0; l < 2; l++) {
    for (const m of ['self_attn.q_proj', 'self_attn.v_proj', 'mlp.down_proj']) {
      for (const w of ['lora_A', 'lora_B']) expected.push(`base_model.model.model.layers.${l}.${m}.${w}.weight`);
    }
  }
  assert.deepEqual(names, expected.sort());
  const header = readSafetensorsHeader(join(dir, 'adapter_model.safetensors'));
  assert.deepEqual(header.tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')?.shape, [4, 32]);
  assert.deepEqual(header.tensors.get('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight')?.shape, [32, 4]);
  assert.ok(existsSync(join(dir, 'optimizer.safetensors')) && existsSync(join(dir, 'ema_model.safetensors')));
  assert.deepEqual(readdirSync(join(dir, '..')), ['v1'], 'no temporary directory is left behind');

  const reloaded = await engine.loadAdapter(dir);
  const ids = [4, 5, 6, 7, 9, 10];
  assert.deepEqual(await engine.logits(ids, reloaded), await engine.logits(ids, adapter));
  assert.deepEqual(await engine.logits(ids, reloaded, { ema: true }), await engine.logits(ids, adapter, { ema: true }));
  const a = adapter.state(), b = reloaded.state();
  assert.equal(b.step, 2);
  assert.deepEqual(b.m, a.m);
  assert.deepEqual(b.v, a.v);

  // The next step from the reloaded state equals the next step from the live one.
  await engine.sdpoStep(adapter, [sample], { learningRate: 1e-2, topK: 8 });
  await engine.sdpoStep(reloaded, [sample], { learningRate: 1e-2, topK: 8 });
  assert.deepEqual(reloaded.state().params, adapter.state().params);

  await assert.rejects(engine.saveAdapter(adapter, dir), AdapterError, 'an existing version is never overwritten');
});

test('the TypeScript LoRA layout matches the native one', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 4, heads: 4, kvHeads: 1, headDim: 8 }), { backend: 'cpu', threads: 1 });
  const adapter = engine.createAdapter({ rank: 3, alpha: 6, targetModules: ['k_proj', 'o_proj', 'up_proj'], seed: 1 });
  const native = adapter.native.layout();
  const { slots, total } = loraSlots(engine.config, adapter.shape);
  assert.equal(total, native.total);
  const nativeOffsets = native.entries.flatMap((e) => [e.aOffset, e.bOffset]);
  assert.deepEqual(slots.map((s) => s.offset), nativeOffsets);
});

test('a fresh adapter is the base model (B = 0) and A is Kaiming-uniform', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 5 }), { backend: 'cpu', threads: 1 });
  const adapter = engine.createAdapter({ rank: 8, alpha: 16, seed: 11 });
  const ids = [1, 2, 3, 4, 5, 6];
  assert.deepEqual(await engine.logits(ids, adapter), await engine.logits(ids, null));
  const A = adapter.tensors().get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')!;
  const bound = 1 / Math.sqrt(32);
  assert.ok(A.every((x) => Math.abs(x) <= bound));
  assert.ok(Math.max(...A.map(Math.abs)) > 0.8 * bound, 'A spans its range');
  const B = adapter.tensors().get('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight')!;
  assert.ok(B.every((x) => x === 0));
});
