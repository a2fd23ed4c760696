// Finds a model folder's safetensors files (single or sharded) and maps Hugging Face tensor names
// onto the engine's weight roles, checking every shape against the configuration.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ShapeError, WeightsError } from '../errors.js';
import type { ModelConfig } from './config.js';
import { numel, readSafetensorsHeader, type TensorInfo } from './safetensors.js';

export type WeightRole =
  | 'embed' | 'final_norm' | 'lm_head' | 'in_norm' | 'post_norm' | 'q_norm' | 'k_norm'
  | 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj'
  | 'q_bias' | 'k_bias' | 'v_bias' | 'o_bias';

/** Native dtype codes (see native/engine/weights.h). */
const DTYPE_CODE = { F32: 0, F16: 1, BF16: 2 } as const;

export interface WeightSpec {
  role: WeightRole;
  layer: number; // -1 for model-wide tensors
  file: string;
  offset: number;
  count: number;
  dtype: number;
}

/** Lists `name -> file` for a model folder: model.safetensors or a sharded index. */
export function weightFiles(dir: string): Map<string, string> {
  const index = join(dir, 'model.safetensors.index.json');
  const single = join(dir, 'model.safetensors');
  const map = new Map<string, string>();
  if (existsSync(index)) {
    let parsed: { weight_map?: Record<string, string> };
    try {
      parsed = JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> };
    } catch (err) {
      throw new WeightsError(`${index} is not valid JSON: ${(err as Error).message}`);
    }
    if (!parsed.weight_map || typeof parsed.weight_map !== 'object') throw new WeightsError(`${index} has no weight_map`);
    for (const [name, file] of Object.entries(parsed.weight_map)) {
      if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) throw new WeightsError(`${index}: bad shard name for ${name}`);
      map.set(name, resolve(dir, file));
    }
    return map;
  }
  if (existsSync(single)) {
    for (const name of readSafetensorsHeader(single).tensors.keys()) map.set(name, resolve(single));
    return map;
  }
  throw new WeightsError(`${dir} has neither model.safetensors nor model.safetensors.index.json`);
}

function expectedShapes(c: ModelConfig): Map<string, { role: WeightRole; layer: number; shape: number[] }> {
  const H = c.hiddenSize, D = c.headDim, Q = c.numHeads * D, KV = c.numKvHeads * D, F = c.intermediateSize;
  const m = new Map<string, { role: WeightRole; layer: number; shape: number[] }>();
  m.set('model.embed_tokens.weight', { role: 'embed', layer: -1, shape: [c.vocabSize, H] });
  m.set('model.norm.weight', { role: 'final_norm', layer: -1, shape: [H] });
  if (!c.tieWordEmbeddings) m.set('lm_head.weight', { role: 'lm_head', layer: -1, shape: [c.vocabSize, H] });
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    const add = (name: string, role: WeightRole, shape: number[]) => m.set(`${p}.${name}`, { role, layer: l, shape });
    add('input_layernorm.weight', 'in_norm', [H]);
    add('post_attention_layernorm.weight', 'post_norm', [H]);
    add('self_attn.q_proj.weight', 'q_proj', [Q, H]);
    add('self_attn.k_proj.weight', 'k_proj', [KV, H]);
    add('self_attn.v_proj.weight', 'v_proj', [KV, H]);
    add('self_attn.o_proj.weight', 'o_proj', [H, Q]);
    add('mlp.gate_proj.weight', 'gate_proj', [F, H]);
    add('mlp.up_proj.weight', 'up_proj', [F, H]);
    add('mlp.down_proj.weight', 'down_proj', [H, F]);
    if (c.qkNorm) {
      add('self_attn.q_norm.weight', 'q_norm', [D]);
      add('self_attn.k_norm.weight', 'k_norm', [D]);
    }
    if (c.bias.q) add('self_attn.q_proj.bias', 'q_bias', [Q]);
    if (c.bias.k) add('self_attn.k_proj.bias', 'k_bias', [KV]);
    if (c.bias.v) add('self_attn.v_proj.bias', 'v_bias', [KV]);
    if (c.bias.o) add('self_attn.o_proj.bias', 'o_bias', [H]);
  }
  return m;
}

/** Every tensor the engine needs, located in its file, shape-checked. */
export function weightSpecs(dir: string, config: ModelConfig): WeightSpec[] {
  const files = weightFiles(dir);
  const headers = new Map<string, Map<string, TensorInfo>>();
  const info = (name: string, file: string): TensorInfo | undefined => {
    let h = headers.get(file);
    if (!h) {
      h = readSafetensorsHeader(file).tensors;
      headers.set(file, h);
    }
    return h.get(name);
  };
  const specs: WeightSpec[] = [];
  for (const [name, want] of expectedShapes(config)) {
    const file = files.get(name);
    const t = file ? info(name, file) : undefined;
    if (!file || !t) throw new WeightsError(`${dir}: tensor ${name} is missing`);
    if (t.shape.length !== want.shape.length || t.shape.some((d, i) => d !== want.shape[i])) {
      throw new ShapeError(`${name} has shape [${t.shape.join(', ')}], config.json implies [${want.shape.join(', ')}]`);
    }
    if (!(t.dtype in DTYPE_CODE)) throw new WeightsError(`${name} has dtype ${t.dtype}; only F32, F16 and BF16 are supported`);
    specs.push({ role: want.role, layer: want.layer, file, offset: t.offset, count: numel(t.shape), dtype: DTYPE_CODE[t.dtype as keyof typeof DTYPE_CODE] });
  }
  return specs;
}
