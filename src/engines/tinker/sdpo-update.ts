// One feedback update on Tinker: the closest form of the SDPO step that Tinker's loss functions
// allow. Tinker takes no custom loss, so the distillation becomes a policy-gradient step with
// `importance_sampling`: each response token's advantage is the teacher's log-probability of it
// (the model conditioned on the feedback) minus the student's (what the served model gave it when
// it sampled), scaled by α and by a gain that brings each sample's mean |Δ| up to 0.03 (at most 4×,
// never down), as the original service did. Then one Adam step (β2 0.95), and the state and sampler
// weights are saved under the version's name. docs/learning.md, "On Tinker", says what differs from
// the local step.
import { InputError } from '../../errors.js';
import type { TensorData, TinkerClient, TinkerDatum } from './client.js';

/** The mean |teacher − student| a batch's advantages are scaled up to, and the largest gain. */
export const TARGET_ADVANTAGE = 0.03;
export const MAX_GAIN = 4;

export interface TinkerSample {
  /** The prompt the student answered (chat template applied), as token ids. */
  promptIds: readonly number[];
  /** The same conversation with the feedback block: what the teacher conditions on. */
  teacherPromptIds: readonly number[];
  responseIds: readonly number[];
  /** The student's log-probability of each response token when it was sampled. */
  studentLogprobs: readonly number[];
}

export interface SampleAdvantages {
  advantages: number[];
  /** The gain the raw differences were scaled by (1-4). */
  gain: number;
  /** Mean |teacher − student| before scaling, and mean (teacher − student). */
  meanAbsDelta: number;
  meanDelta: number;
}

/** Per-token advantages α·gain·(teacher − student) of one sample. */
export function sampleAdvantages(student: readonly number[], teacher: readonly number[], alpha: number): SampleAdvantages {
  if (student.length !== teacher.length) throw new InputError(`student and teacher log-probs differ in length (${student.length} vs ${teacher.length})`);
  const deltas = student.map((s, i) => teacher[i]! - s);
  const n = Math.max(1, deltas.length);
  const meanAbsDelta = deltas.reduce((a, d) => a + Math.abs(d), 0) / n;
  const gain = meanAbsDelta > 0 ? Math.min(Math.max(TARGET_ADVANTAGE / meanAbsDelta, 1), MAX_GAIN) : 1;
  return { advantages: deltas.map((d) => alpha * gain * d), gain, meanAbsDelta, meanDelta: deltas.reduce((a, d) => a + d, 0) / n };
}

const tensor = (data: number[], dtype: TensorData['dtype']): TensorData => ({ data, dtype, shape: [data.length] });

/**
 * The datum Tinker trains on: the sequence without its last token as input, each next token as the
 * target, and per target the student's log-prob and advantage (0 on prompt positions).
 */
export function datumFor(sample: TinkerSample, advantages: readonly number[]): TinkerDatum {
  const tokens = [...sample.promptIds, ...sample.responseIds];
  if (sample.responseIds.length === 0) throw new InputError('a sample has an empty response');
  if (sample.studentLogprobs.length !== sample.responseIds.length) throw new InputError(`a sample has ${sample.responseIds.length} response tokens but ${sample.studentLogprobs.length} log-probs`);
  const pad = new Array<number>(sample.promptIds.length).fill(0);
  return {
    model_input: { chunks: [{ type: 'encoded_text', tokens: tokens.slice(0, -1) }] },
    loss_fn_inputs: {
      target_tokens: tensor(tokens.slice(1), 'int64'),
      logprobs: tensor([...pad, ...sample.studentLogprobs].slice(1), 'float32'),
      advantages: tensor([...pad, ...advantages].slice(1), 'float32'),
    },
  };
}

/** The log-probs a sampling session gives the response tokens after `promptIds` (Tinker's compute_logprobs). */
export async function responseLogprobs(client: TinkerClient, samplingSessionId: string, promptIds: readonly number[], responseIds: readonly number[]): Promise<number[]> {
  const out = await client.sample({ samplingSessionId, prompt: [...promptIds, ...responseIds], maxTokens: 1, promptLogprobs: true, temperature: 1 });
  const rows = out.promptLogprobs;
  if (!rows || rows.length < promptIds.length + responseIds.length) throw new InputError(`Tinker returned ${rows?.length ?? 0} prompt log-probs for ${promptIds.length + responseIds.length} tokens`);
  return rows.slice(promptIds.length, promptIds.length + responseIds.length).map((x) => x ?? 0);
}

export interface TinkerUpdateRequest {
  /** The adapter's training model on Tinker. */
  modelId: string;
  /** The training state the update starts from (the served version's), loaded first with its optimizer. */
  fromState: string;
  /** A sampling session of the teacher: the base model (teacher "base") or the served version ("current"). */
  teacherSession: string;
  samples: readonly TinkerSample[];
  learningRate: number;
  alpha: number;
  /** Names the saved state and sampler weights (e.g. the adapter's version). */
  name: string;
}

export interface TinkerUpdateResult {
  statePath: string;
  samplerPath: string;
  metrics: { loss: number | null; gain: number; meanAbsDelta: number; meanDelta: number; tokens: number; samples: number; upstream: Record<string, number>; timings: Record<string, number> };
}

export async function tinkerSdpoStep(client: TinkerClient, req: TinkerUpdateRequest): Promise<TinkerUpdateResult> {
  if (req.samples.length === 0) throw new InputError('an update needs at least one sample');
  const timings: Record<string, number> = {};
  let t = performance.now();
  await client.loadWeights(req.modelId, req.fromState, { optimizer: true });
  timings.loadMs = performance.now() - t;
  t = performance.now();
  const teacher = await Promise.all(req.samples.map((s) => responseLogprobs(client, req.teacherSession, s.teacherPromptIds, s.responseIds)));
  timings.teacherMs = performance.now() - t;
  const scored = req.samples.map((s, i) => sampleAdvantages(s.studentLogprobs, teacher[i]!, req.alpha));
  const data = req.samples.map((s, i) => datumFor(s, scored[i]!.advantages));
  t = performance.now();
  const fb = await client.forwardBackward(req.modelId, data, 'importance_sampling');
  timings.forwardBackwardMs = performance.now() - t;
  t = performance.now();
  await client.optimStep(req.modelId, { learningRate: req.learningRate, beta1: 0.9, beta2: 0.95, eps: 1e-8 });
  timings.optimMs = performance.now() - t;
  t = performance.now();
  const [statePath, samplerPath] = [await client.saveWeights(req.modelId, req.name), await client.saveWeightsForSampler(req.modelId, req.name)];
  timings.saveMs = performance.now() - t;
  const tokens = req.samples.reduce((n, s) => n + s.responseIds.length, 0);
  const mean = (f: (x: SampleAdvantages) => number) => scored.reduce((a, x) => a + f(x), 0) / scored.length;
  const loss = fb.metrics['loss:sum'] ?? fb.metrics.loss ?? null;
  return {
    statePath,
    samplerPath,
    metrics: { loss, gain: mean((x) => x.gain), meanAbsDelta: mean((x) => x.meanAbsDelta), meanDelta: mean((x) => x.meanDelta), tokens, samples: req.samples.length, upstream: fb.metrics, timings },
  };
}
