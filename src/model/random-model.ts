// Writes small random Qwen3-shaped model folders (config.json + model.safetensors), deterministic from a
// seed: the models tests and benchmarks build for themselves, with no download.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSafetensors, type TensorToWrite } from './safetensors.js';

export interface RandomModelOptions {
  vocab?: number;
  hidden?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  intermediate?: number;
  tied?: boolean;
  seed?: number;
  std?: number;
  eosTokenId?: number;
  /** Untied only: std of the LM head, and which token rows it may favour (others are zero). */
  lmHeadStd?: number;
  lmHeadRows?: (tokenId: number) => boolean;
}

/** Mulberry32: a small seeded PRNG, good enough for test weights. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function normal(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand());
}

export function tempDir(prefix = 'claas-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Writes config.json + model.safetensors into a new folder and returns its path. */
export function writeRandomModel(opts: RandomModelOptions = {}, dir = join(tempDir(), 'model')): string {
  const o = { vocab: 64, hidden: 32, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 48, tied: true, seed: 1, std: 0.2, ...opts };
  const rand = rng(o.seed);
  const tensors: TensorToWrite[] = [];
  const add = (name: string, shape: number[], init: 'normal' | 'norm') => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = init === 'norm' ? 1 + 0.1 * normal(rand) : o.std * normal(rand);
    tensors.push({ name, shape, data });
  };
  const Q = o.heads * o.headDim, KV = o.kvHeads * o.headDim;
  add('model.embed_tokens.weight', [o.vocab, o.hidden], 'normal');
  for (let l = 0; l < o.layers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [o.hidden], 'norm');
    add(`${p}.self_attn.q_proj.weight`, [Q, o.hidden], 'normal');
    add(`${p}.self_attn.k_proj.weight`, [KV, o.hidden], 'normal');
    add(`${p}.self_attn.v_proj.weight`, [KV, o.hidden], 'normal');
    add(`${p}.self_attn.o_proj.weight`, [o.hidden, Q], 'normal');
    add(`${p}.self_attn.q_norm.weight`, [o.headDim], 'norm');
    add(`${p}.self_attn.k_norm.weight`, [o.headDim], 'norm');
    add(`${p}.post_attention_layernorm.weight`, [o.hidden], 'norm');
    add(`${p}.mlp.gate_proj.weight`, [o.intermediate, o.hidden], 'normal');
    add(`${p}.mlp.up_proj.weight`, [o.intermediate, o.hidden], 'normal');
    add(`${p}.mlp.down_proj.weight`, [o.hidden, o.intermediate], 'normal');
  }
  add('model.norm.weight', [o.hidden], 'norm');
  if (!o.tied) {
    add('lm_head.weight', [o.vocab, o.hidden], 'normal');
    const head = tensors.at(-1)!.data;
    const scale = (o.lmHeadStd ?? o.std) / o.std;
    for (let v = 0; v < o.vocab; v++) {
      const keep = o.lmHeadRows ? o.lmHeadRows(v) : true;
      for (let h = 0; h < o.hidden; h++) head[v * o.hidden + h]! *= keep ? scale : 0;
    }
  }
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify(
      {
        architectures: ['Qwen3ForCausalLM'],
        model_type: 'qwen3',
        vocab_size: o.vocab,
        hidden_size: o.hidden,
        intermediate_size: o.intermediate,
        num_hidden_layers: o.layers,
        num_attention_heads: o.heads,
        num_key_value_heads: o.kvHeads,
        head_dim: o.headDim,
        hidden_act: 'silu',
        max_position_embeddings: 32768,
        rms_norm_eps: 1e-6,
        rope_theta: 10000,
        rope_scaling: null,
        tie_word_embeddings: o.tied,
        attention_bias: false,
        use_sliding_window: false,
        torch_dtype: 'float32',
        bos_token_id: null,
        eos_token_id: o.eosTokenId ?? null,
      },
      null,
      2,
    ),
  );
  return dir;
}
