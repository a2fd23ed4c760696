// The benchmark's workload, shared by every runner: a small Qwen3-shaped model and one SDPO sample
// (prompt, hindsight teacher prompt, response), deterministic from fixed seeds.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rng, writeRandomModel, type RandomModelOptions } from '../src/model/random-model.js';
import type { SdpoOptions } from '../src/engine/sdpo-options.js';

export const BENCH_MODEL: RandomModelOptions = { vocab: 2048, hidden: 256, layers: 4, heads: 8, kvHeads: 4, headDim: 32, intermediate: 768, tied: true, seed: 1 };
export const BENCH_LORA = { rank: 16, alpha: 32 };
export const BENCH_OPTIONS: Partial<SdpoOptions> = { alpha: 0.5, topK: 100, tail: true, teacher: 'current', learningRate: 1e-4 };

export interface BenchWorkload {
  modelDir: string;
  sampleFile: string;
  sample: { promptIds: number[]; teacherPromptIds: number[]; responseIds: number[] };
}

/** Writes the model folder and sample.json into dir. */
export function writeWorkload(dir: string, promptTokens = 128, responseTokens = 64): BenchWorkload {
  const modelDir = writeRandomModel(BENCH_MODEL, join(dir, 'model'));
  const r = rng(2);
  const tok = () => Math.floor(r() * BENCH_MODEL.vocab!);
  const promptIds = Array.from({ length: promptTokens }, tok);
  const feedback = Array.from({ length: 16 }, tok);
  const sample = {
    promptIds,
    teacherPromptIds: [...promptIds.slice(0, promptTokens - 4), ...feedback, ...promptIds.slice(promptTokens - 4)],
    responseIds: Array.from({ length: responseTokens }, tok),
  };
  const sampleFile = join(dir, 'sample.json');
  writeFileSync(sampleFile, JSON.stringify({ sample, lora: BENCH_LORA, options: BENCH_OPTIONS }));
  return { modelDir, sampleFile, sample };
}
