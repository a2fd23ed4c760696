// Sampling one token from a row of logits read back from the GPU, mirroring native/cpu/sample.cc
// (greedy, or temperature with top-k / top-p; ties go to the lower id) with the same RNG draws.
import type { NativeSampled } from '../native.js';
import { uniformDouble, type Mt19937_64 } from './mt19937-64.js';

export interface SamplingParams {
  temperature: number;
  topP: number;
  topK: number;
  topLogprobs: number;
  vocabLimit: number;
}

export function sampleRow(logits: Float32Array, p: SamplingParams, rng: Mt19937_64): NativeSampled {
  const V = logits.length;
  let mx = logits[0]!;
  for (let v = 1; v < V; v++) if (logits[v]! > mx) mx = logits[v]!;
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(Math.fround(logits[v]! - mx));
  const lse = Math.fround(mx + Math.fround(Math.log(sum)));

  const n0 = p.vocabLimit > 0 && p.vocabLimit < V ? p.vocabLimit : V;
  const better = (a: number, b: number) => logits[a]! > logits[b]! || (logits[a] === logits[b] && a < b);
  const order = (a: number, b: number) => (better(a, b) ? -1 : better(b, a) ? 1 : 0);
  let id = 0;
  if (p.temperature <= 0) {
    for (let v = 1; v < n0; v++) if (better(v, id)) id = v;
  } else {
    const temperature = Math.fround(p.temperature);
    let cand = Array.from({ length: n0 }, (_, i) => i).sort(order);
    let n = n0;
    if (p.topK > 0 && p.topK < n0) n = p.topK;
    cand = cand.slice(0, n);
    const w = new Float64Array(n);
    let total = 0;
    const top = logits[cand[0]!]!;
    for (let i = 0; i < n; i++) {
      w[i] = Math.exp((logits[cand[i]!]! - top) / temperature);
      total += w[i]!;
    }
    const topP = Math.fround(p.topP);
    if (topP < 1) {
      let acc = 0;
      let keep = n;
      for (let i = 0; i < n; i++) {
        acc += w[i]!;
        if (acc >= topP * total) {
          keep = i + 1;
          break;
        }
      }
      n = keep;
      total = acc;
    }
    let r = uniformDouble(rng, 0, total);
    id = cand[n - 1]!;
    for (let i = 0; i < n; i++) {
      r -= w[i]!;
      if (r < 0) {
        id = cand[i]!;
        break;
      }
    }
  }
  const out: NativeSampled = { id, logprob: Math.fround(logits[id]! - lse), topIds: new Int32Array(0), topLogprobs: new Float32Array(0) };
  if (p.topLogprobs > 0) {
    const k = Math.min(p.topLogprobs, n0);
    const ids = Array.from({ length: n0 }, (_, i) => i).sort(order).slice(0, k);
    out.topIds = Int32Array.from(ids);
    out.topLogprobs = Float32Array.from(ids, (i) => logits[i]! - lse);
  }
  return out;
}
