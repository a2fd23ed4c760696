// Comparisons and inputs shared by the WebGPU engine tests (engine, f16 storage, split buffers):
// error measures between a backend's arrays and the CPU's, random token ids, and teacher targets
// as a remote scorer would send them.
import assert from 'node:assert/strict';
import type { SdpoSample } from '../../src/engine/engine.js';
import { rng } from '../../src/model/random-model.js';

export function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length mismatch');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function relL2(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  assert.equal(a.length, ref.length, 'length mismatch');
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - ref[i]!) ** 2;
    n += ref[i]! ** 2;
  }
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-30);
}

export function ids(r: () => number, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => Math.floor(r() * vocab));
}

export function withRemoteTargets(samples: SdpoSample[], vocab: number, K: number, seed: number): SdpoSample[] {
  const r = rng(seed);
  return samples.map((s) => {
    const T = s.responseIds.length;
    const topIds: number[] = [], topLogprobs: number[] = [], tokenLogprobs: number[] = [];
    for (let t = 0; t < T; t++) {
      const chosen = new Set<number>();
      while (chosen.size < K) chosen.add(Math.floor(r() * vocab));
      const w = [...chosen].map(() => 0.1 + r());
      const total = w.reduce((a, b) => a + b, 0) / 0.9;
      topIds.push(...chosen);
      topLogprobs.push(...w.map((x) => Math.log(x / total)).sort((a, b) => b - a));
      tokenLogprobs.push(Math.log(0.05 + 0.5 * r()));
    }
    return { ...s, teacherTargets: { k: K, topIds, topLogprobs, tokenLogprobs } };
  });
}
