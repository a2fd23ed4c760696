// config.json of a Hugging Face Qwen3 / Qwen2 / Llama folder, validated into the engine's config.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';

export type ModelType = 'qwen3' | 'qwen2' | 'llama' | 'mistral';

export interface ModelConfig {
  modelType: ModelType;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  ropeTheta: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
  /** Qwen3 normalizes q and k per head before RoPE. */
  qkNorm: boolean;
  /** Which attention projections carry a bias (q, k, v, o). */
  bias: { q: boolean; k: boolean; v: boolean; o: boolean };
  maxPositionEmbeddings: number;
  eosTokenIds: number[];
}

const SUPPORTED: readonly ModelType[] = ['qwen3', 'qwen2', 'llama', 'mistral'];

function positiveInt(raw: Record<string, unknown>, key: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new ConfigError(`config.json: ${key} must be a positive integer (got ${JSON.stringify(raw[key])})`);
  return v;
}

function positiveNumber(raw: Record<string, unknown>, key: string, fallback: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ConfigError(`config.json: ${key} must be a positive number (got ${JSON.stringify(raw[key])})`);
  return v;
}

function bool(raw: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'boolean') throw new ConfigError(`config.json: ${key} must be a boolean (got ${JSON.stringify(raw[key])})`);
  return v;
}

/** Validates a parsed config.json object. */
export function parseModelConfig(raw: Record<string, unknown>): ModelConfig {
  const modelType = raw.model_type;
  if (typeof modelType !== 'string' || !SUPPORTED.includes(modelType as ModelType)) {
    throw new ConfigError(`config.json: model_type ${JSON.stringify(modelType)} is not supported (supported: ${SUPPORTED.join(', ')})`);
  }
  const type = modelType as ModelType;
  const act = raw.hidden_act ?? 'silu';
  if (act !== 'silu') throw new ConfigError(`config.json: hidden_act ${JSON.stringify(act)} is not supported (only "silu")`);
  const scaling = raw.rope_scaling as Record<string, unknown> | null | undefined;
  if (scaling !== null && scaling !== undefined) {
    const kind = scaling.rope_type ?? scaling.type;
    if (kind !== 'default') throw new ConfigError(`config.json: rope_scaling ${JSON.stringify(kind)} is not supported`);
  }
  if (raw.use_sliding_window === true) throw new ConfigError('config.json: use_sliding_window=true is not supported');
  if (raw.mlp_bias === true) throw new ConfigError('config.json: mlp_bias=true is not supported');

  const hiddenSize = positiveInt(raw, 'hidden_size');
  const numHeads = positiveInt(raw, 'num_attention_heads');
  const numKvHeads = positiveInt(raw, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) throw new ConfigError(`config.json: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  const derivedHeadDim = hiddenSize / numHeads;
  const headDim = raw.head_dim === undefined || raw.head_dim === null ? derivedHeadDim : positiveInt(raw, 'head_dim');
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new ConfigError(`config.json: head_dim ${headDim} must be an even integer`);

  const attentionBias = bool(raw, 'attention_bias', false);
  const bias =
    type === 'qwen2'
      ? { q: true, k: true, v: true, o: false }
      : { q: attentionBias, k: attentionBias, v: attentionBias, o: attentionBias };
  const eos = raw.eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos.filter((x): x is number => typeof x === 'number') : typeof eos === 'number' ? [eos] : [];

  return {
    modelType: type,
    vocabSize: positiveInt(raw, 'vocab_size'),
    hiddenSize,
    numLayers: positiveInt(raw, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: positiveInt(raw, 'intermediate_size'),
    ropeTheta: positiveNumber(raw, 'rope_theta', 10000),
    rmsNormEps: positiveNumber(raw, 'rms_norm_eps', 1e-6),
    tieWordEmbeddings: bool(raw, 'tie_word_embeddings', false),
    qkNorm: type === 'qwen3',
    bias,
    maxPositionEmbeddings: positiveInt(raw, 'max_position_embeddings', 32768),
    eosTokenIds,
  };
}

/** Reads and validates `<dir>/config.json`. */
export function readModelConfig(dir: string): ModelConfig {
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${file}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${file} must hold a JSON object`);
  return parseModelConfig(raw as Record<string, unknown>);
}
