// The remote teacher (docs/learning.md): an OpenAI-compatible server scores x~ ⧺ y with prompt_logprobs = K
// and max_tokens = 1; the rows over y become the teacher's top-K targets for the step.
import type { SdpoSample, TeacherTargets } from '../engine/engine.js';
import { UpstreamError } from '../errors.js';
import type { VllmClient } from '../serve/vllm-client.js';

export async function remoteTeacherTargets(client: VllmClient, model: string, sample: SdpoSample, k: number): Promise<TeacherTargets> {
  const prompt = Array.from(sample.teacherPromptIds);
  const response = Array.from(sample.responseIds);
  const rows = await client.promptLogprobs(model, [...prompt, ...response], k);
  // rows[i] scores token i + 1, so response token t is scored by row prompt.length + t - 1.
  const scored = rows.slice(prompt.length - 1);
  const K = Math.min(k, ...scored.map((r) => r.top.length));
  if (K < 1) throw new UpstreamError(`the teacher server returned no top log-probs (asked for ${k})`);
  const topIds = new Int32Array(response.length * K);
  const topLogprobs = new Float32Array(response.length * K);
  const tokenLogprobs = new Float32Array(response.length);
  scored.forEach((row, t) => {
    for (let j = 0; j < K; j++) {
      topIds[t * K + j] = row.top[j]!.id;
      topLogprobs[t * K + j] = Math.min(0, row.top[j]!.logprob);
    }
    tokenLogprobs[t] = Math.min(0, row.logprob);
  });
  return { k: K, topIds, topLogprobs, tokenLogprobs };
}
