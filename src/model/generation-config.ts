// generation_config.json of a Hugging Face model folder: the model's own sampling defaults, validated.
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { readJsonObject } from './tokenizer.js';

/** Only the fields the file sets; callers layer request values over these and their own defaults under them. */
export interface GenerationDefaults {
  temperature?: number;
  topP?: number;
  /** 0 means no top-k cut, as in HF. */
  topK?: number;
  maxNewTokens?: number;
  eosTokenIds?: number[];
  doSample?: boolean;
}

/** Validates a parsed generation_config.json object; null fields count as absent (HF writes them that way). */
export function parseGenerationConfig(raw: Record<string, unknown>, source = 'generation_config.json'): GenerationDefaults {
  const bad = (key: string, want: string) => new ConfigError(`${source}: ${key} must be ${want} (got ${JSON.stringify(raw[key])})`);
  const present = (key: string) => raw[key] !== undefined && raw[key] !== null;
  const out: GenerationDefaults = {};
  if (present('temperature')) {
    const v = raw.temperature;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw bad('temperature', 'a finite number >= 0');
    out.temperature = v;
  }
  if (present('top_p')) {
    const v = raw.top_p;
    if (typeof v !== 'number' || !(v > 0 && v <= 1)) throw bad('top_p', 'a number in (0, 1]');
    out.topP = v;
  }
  if (present('top_k')) {
    const v = raw.top_k;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw bad('top_k', 'an integer >= 0');
    out.topK = v;
  }
  if (present('max_new_tokens')) {
    const v = raw.max_new_tokens;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw bad('max_new_tokens', 'a positive integer');
    out.maxNewTokens = v;
  }
  if (present('eos_token_id')) {
    const v = raw.eos_token_id;
    const ids = Array.isArray(v) ? v : [v];
    if (!ids.every((id) => typeof id === 'number' && Number.isInteger(id) && id >= 0)) {
      throw bad('eos_token_id', 'a token id or a list of token ids');
    }
    out.eosTokenIds = [...new Set(ids as number[])];
  }
  if (present('do_sample')) {
    if (typeof raw.do_sample !== 'boolean') throw bad('do_sample', 'a boolean');
    out.doSample = raw.do_sample;
  }
  return out;
}

/** Reads `generation_config.json` from a model folder; a folder without one has no defaults. */
export function readGenerationConfig(modelDir: string): GenerationDefaults {
  const path = join(modelDir, 'generation_config.json');
  const raw = readJsonObject(path, false);
  return raw === undefined ? {} : parseGenerationConfig(raw, path);
}
