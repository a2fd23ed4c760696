// claas eval: teaches a live server each style through /v1/feedback and measures, on held-out probes,
// what changed — per style: adherence before and after and the events it took; task accuracy
// (retention); an unrelated-feedback control; every style learned one after another on one adapter
// (do the earlier ones hold?); the collapse guard's measurements from each update. It sends no
// training options unless asked, so by default it measures what users get: the server's defaults.
import { STYLES, UNRELATED_FEEDBACK, type StyleName } from '../toy/styles.js';
import { openSet, taskSet, type Task } from '../toy/tasks.js';
import { EvalClient } from './client.js';
import { measure, type Measurement } from './measure.js';


export interface EvalOptions {
  url: string;
  key?: string;
  styles: StyleName[];
  /** Feedback events per style at most. */
  events: number;
  /** Re-measure after every k events. */
  every: number;
  /** Held-out task prompts (greedy replies: adherence and accuracy). */
  probes: number;
  /** Held-out open prompts (sampled replies: adherence and variety); default 2 × probes. */
  openProbes?: number;
  /** Adherence at which a style counts as learned. */
  target: number;
  seed: number;
  /** Training options sent with each feedback event (empty: the server's defaults). */
  training: Record<string, unknown>;
  /** LoRA rank of the adapters the eval creates (unset: the server's default). */
  rank?: number;
  /** LoRA alpha of the adapters the eval creates (default 2 × rank when a rank is given). */
  loraAlpha?: number;
  /** Projections the adapters train (default: the server's, all seven). */
  targetModules?: string[];
  /**
   * Give every style all `events` (default: stop once it reaches `target`, like a user who stops
   * asking once the assistant complies).
   */
  allEvents?: boolean;
  log: (line: string) => void;
}

export interface StyleResult {
  before: number;
  after: number;
  /** Events until adherence reached the target (null: not within the budget). */
  events: number | null;
  curve: { events: number; adherence: number; sampledAdherence: number; sampledAdherenceT1: number; margin: number | null; accuracy: number; distinct2: number; entropy: number }[];
  guard: { klToBase: number; updateKl: number; promoted: boolean; reason: string | null }[];
}

export interface EvalSummary {
  seed: number;
  styles: Partial<Record<StyleName, StyleResult>>;
  base: { accuracy: number; distinct2: number; entropy: number; defaultRate: number; adherence: Record<StyleName, number> };
  retention_delta: number;
  distinct2_ratio: number;
  /** Learned adapters' reply entropy over the base model's (the value farthest from 1). */
  entropy_ratio: number;
  /** Largest KL to base (nats/token) the collapse guard measured after any update. */
  max_kl_to_base: number;
  control_delta: number;
  /** Every style taught in turn on one adapter: each style's adherence at the end, and events per style. */
  sequence: { order: StyleName[]; first_after_all: number; last: number; min_after_all: number; after_all: Record<string, number>; events: (number | null)[]; accuracy: number } | null;
  /** Updates the collapse guard refused (out of all feedback events given), and why. */
  refused: number;
  refusals: string[];
  events_given: number;
  seconds: number;
}

function guardOf(result: Record<string, unknown>): { klToBase: number; updateKl: number; promoted: boolean; reason: string | null } {
  const g = (result.guard ?? {}) as { klToBase?: number; updateKl?: number; reason?: string | null };
  return { klToBase: g.klToBase ?? NaN, updateKl: g.updateKl ?? NaN, promoted: result.promoted === true, reason: g.reason ?? null };
}

async function teach(client: EvalClient, adapter: string, style: StyleName, train: Task[], probes: Task[], open: Task[], o: EvalOptions, start: Measurement, untilLearned = false): Promise<StyleResult> {
  const point = (events: number, m: Measurement) => ({ events, adherence: m.adherence[style], sampledAdherence: m.sampledAdherence[style], sampledAdherenceT1: m.sampledAdherenceT1[style], margin: m.margin, accuracy: m.accuracy, distinct2: m.distinct2, entropy: m.entropy });
  // Learned: the greedy task replies and the open replies sampled as the server samples for users both
  // follow the style (a style the greedy reply shows while sampling still often misses it is half
  // learned, and samples stray words). Adherence at temperature 1 is reported beside it.
  const learned = (m: Measurement) => m.adherence[style] >= o.target && m.sampledAdherence[style] >= o.target;
  const curve: StyleResult['curve'] = [point(0, start)];
  const guard: StyleResult['guard'] = [];
  let reached: number | null = learned(start) ? 0 : null;
  let last = start;
  const phrasings = STYLES[style].feedback.train;
  // With `untilLearned` teaching stops at the target; otherwise all the events are given.
  for (let e = 1; e <= o.events && !(untilLearned && reached !== null); e++) {
    const task = train[(e - 1) % train.length]!;
    const reply = await client.chat(adapter, task.prompt, { temperature: 0 });
    const result = await client.feedback(adapter, reply.id, phrasings[(e - 1) % phrasings.length]!, o.training);
    guard.push(guardOf(result));
    if (e % o.every === 0 || e === o.events) {
      last = await measure(client, adapter, probes, open, style);
      curve.push(point(e, last));
      o.log(`  ${style}: ${e} event(s): adherence ${last.adherence[style].toFixed(2)} (sampled ${last.sampledAdherence[style].toFixed(2)}, at temperature 1 ${last.sampledAdherenceT1[style].toFixed(2)}), margin ${last.margin?.toFixed(2)}, accuracy ${last.accuracy.toFixed(2)}`);
      if (reached === null && learned(last)) reached = e;
    }
  }
  return { before: start.adherence[style], after: last.adherence[style], events: reached, curve, guard };
}

export async function runEval(o: EvalOptions): Promise<EvalSummary> {
  const t0 = performance.now();
  const client = new EvalClient(o.url, o.key);
  const base = await client.baseModel();
  const probes = taskSet(1000 + o.seed, o.probes);
  // Feedback is given on replies to task prompts and open prompts in turn (a user's conversations
  // are not all of one kind); none of them is a probe.
  const tasks = taskSet(2000 + o.seed, 32, new Set(probes.map((p) => p.prompt)));
  const opens = openSet(4000 + o.seed, 32, 'train');
  const train = tasks.flatMap((t, i) => [t, opens[i]!]);
  const open = openSet(3000 + o.seed, o.openProbes ?? 2 * o.probes, 'probe');
  const baseline = await measure(client, base, probes, open, null);
  o.log(`base model ${base}: accuracy ${baseline.accuracy.toFixed(2)}, default style ${baseline.defaultRate.toFixed(2)}, adherence ${JSON.stringify(baseline.adherence)}`);
  const tag = `${o.seed}-${Date.now().toString(36)}`;
  const lora = { rank: o.rank, alpha: o.loraAlpha, targetModules: o.targetModules };
  const summary: EvalSummary = {
    seed: o.seed,
    styles: {},
    base: { accuracy: baseline.accuracy, distinct2: baseline.distinct2, entropy: baseline.entropy, defaultRate: baseline.defaultRate, adherence: baseline.adherence },
    retention_delta: 0,
    distinct2_ratio: 1,
    entropy_ratio: 1,
    max_kl_to_base: 0,
    control_delta: 0,
    sequence: null,
    refused: 0,
    refusals: [],
    events_given: 0,
    seconds: 0,
  };
  let worstAccuracy = baseline.accuracy;
  const guards: StyleResult['guard'] = [];
  // Ratios to base of the learned adapters' diversity: the one farthest from 1 is reported.
  let distinctRatio = 1;
  let entropyRatio = 1;
  const farther = (a: number, b: number) => (Math.abs(b - 1) > Math.abs(a - 1) ? b : a);
  for (const style of o.styles) {
    const adapter = `eval/${style}-${tag}`;
    await client.createAdapter(adapter, o.seed, lora);
    const start = await measure(client, adapter, probes, open, style);
    o.log(`${style}: before ${start.adherence[style].toFixed(2)}`);
    const r = await teach(client, adapter, style, train, probes, open, o, start, !o.allEvents);
    summary.styles[style] = r;
    const end = r.curve.at(-1)!;
    worstAccuracy = Math.min(worstAccuracy, end.accuracy);
    distinctRatio = farther(distinctRatio, baseline.distinct2 > 0 ? end.distinct2 / baseline.distinct2 : 1);
    entropyRatio = farther(entropyRatio, baseline.entropy > 0 ? end.entropy / baseline.entropy : 1);
    summary.max_kl_to_base = Math.max(summary.max_kl_to_base, ...r.guard.map((g) => g.klToBase));
    guards.push(...r.guard);
    await client.deleteAdapter(adapter);
  }
  summary.retention_delta = worstAccuracy - baseline.accuracy;
  summary.distinct2_ratio = distinctRatio;
  summary.entropy_ratio = entropyRatio;

  // Control: unrelated "feedback" for as many events as a style got; no style may move.
  const control = `eval/control-${tag}`;
  await client.createAdapter(control, o.seed, lora);
  for (let e = 1; e <= o.events; e++) {
    const reply = await client.chat(control, train[e % train.length]!.prompt);
    await client.feedback(control, reply.id, UNRELATED_FEEDBACK.train[e % UNRELATED_FEEDBACK.train.length]!, o.training);
  }
  const after = await measure(client, control, probes, open, null);
  summary.control_delta = Math.max(...(Object.keys(STYLES) as StyleName[]).map((s) => Math.abs(after.adherence[s] - baseline.adherence[s])), Math.abs(after.defaultRate - baseline.defaultRate));
  o.log(`control: largest adherence change ${summary.control_delta.toFixed(2)}`);
  await client.deleteAdapter(control);

  // Every style in sequence on one adapter: each must still hold once all are learned.
  if (o.styles.length >= 2) {
    const order = o.styles;
    const seq = `eval/sequence-${tag}`;
    await client.createAdapter(seq, o.seed, lora);
    let m = await measure(client, seq, probes, open, null);
    const events: (number | null)[] = [];
    for (const style of order) {
      const r = await teach(client, seq, style, train, probes, open, { ...o, log: () => {} }, m, true);
      guards.push(...r.guard);
      events.push(r.events);
      m = await measure(client, seq, probes, open, null);
      o.log(`sequence: after ${style} (${r.events ?? `>${o.events}`} events): ${JSON.stringify(m.adherence)}, accuracy ${m.accuracy.toFixed(2)}`);
    }
    const afterAll = Object.fromEntries(order.map((s) => [s, m.adherence[s]]));
    summary.sequence = { order, first_after_all: m.adherence[order[0]!], last: m.adherence[order.at(-1)!], min_after_all: Math.min(...order.map((s) => m.adherence[s])), after_all: afterAll, events, accuracy: m.accuracy };
    await client.deleteAdapter(seq);
  }
  summary.refused = guards.filter((g) => !g.promoted).length;
  summary.refusals = guards.filter((g) => !g.promoted).map((g) => g.reason ?? 'no reason');
  summary.events_given = guards.length;
  summary.seconds = Math.round((performance.now() - t0) / 1000);
  // Kept by the server for the dashboard.
  await client.call('POST', '/v1/eval/runs', summary).catch((err: unknown) => o.log(`the server did not keep the run: ${(err as Error).message}`));
  return summary;
}
