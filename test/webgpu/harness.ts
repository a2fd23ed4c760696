// Parity harness for the WebGPU ops: runs one case on the GPU and on the CPU reference (cpuOps of the
// addon), guards every GPU output with sentinel elements, and compares element by element.
//
// API
//   gpuOrSkip(t)        -> Gpu | null  The shared device of this test file. No adapter: fails the
//                                      test when CI=true, otherwise skips it with the reason (null).
//   closeGpu()                         Destroys the shared device (call from after()).
//   cpuOps                             The CPU reference ops (src/engine/native.ts CpuOps).
//   randF32(n, seed, scale?)           Deterministic N(0, scale^2) values; randIds(n, max, seed) ids.
//   runCase(gpu, case) -> CaseReport   One op on both backends:
//     inputs:  named arrays uploaded as they are (read-only for the op);
//     outputs: named initial contents (what accumulate / in-place ops start from) with an optional
//              per-output tolerance; on the GPU each gets GUARD extra elements holding SENTINEL;
//     gpu(gpu, buffers): encodes the op; cpu(arrays): runs the reference on fresh copies;
//     tol: { abs, rel }: element e passes when |gpu - cpu| <= abs + rel * |cpu| (Int32 outputs exact).
//   It throws (failing the test) on any mismatch or touched sentinel, naming the worst element, and
//   returns per-output { maxAbs, maxRel, n, tol } for the test to report; describe(report, caseTol?)
//   gives one diagnostic line (maxRel counts only elements whose reference exceeds tol.abs).
//   expectClose(label, got, want, tol) -> OutputReport   The same comparison for arrays computed by hand.
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { Gpu } from '../../src/engine/webgpu/device.js';
import { nativeAddon, type CpuOps } from '../../src/engine/native.js';
import { normal, rng } from '../../src/model/random-model.js';

export type HostArray = Float32Array | Int32Array;
export interface Tolerance {
  abs: number;
  rel: number;
}
export interface OutputReport {
  maxAbs: number;
  maxRel: number;
  n: number;
  tol: Tolerance;
}
export interface CaseReport {
  name: string;
  outputs: Record<string, OutputReport>;
}
export interface Case {
  name: string;
  inputs: Record<string, HostArray>;
  outputs: Record<string, HostArray | { init: HostArray; tol?: Tolerance }>;
  gpu(gpu: Gpu, buffers: Record<string, GPUBuffer>): void;
  cpu(arrays: Record<string, HostArray>): void;
  tol: Tolerance;
}

/** Elements appended after every GPU output; a write past the end lands on them. */
export const GUARD = 64;
/** A NaN payload no kernel produces by arithmetic, compared bit for bit. */
export const SENTINEL_BITS = 0x7fa5a5a5;

export const cpuOps: CpuOps = nativeAddon().cpuOps;

let shared: Promise<Gpu> | null = null;

export async function gpuOrSkip(t: TestContext): Promise<Gpu | null> {
  shared ??= Gpu.open();
  try {
    return await shared;
  } catch (e) {
    const reason = (e as Error).message;
    if (process.env.CI === 'true') throw new Error(`CI=true requires a WebGPU adapter: ${reason}`);
    t.skip(reason);
    return null;
  }
}

export async function closeGpu(): Promise<void> {
  if (!shared) return;
  const pending = shared;
  shared = null;
  try {
    (await pending).destroy();
  } catch {
    // open() failed: nothing to destroy.
  }
}

export function randF32(n: number, seed: number, scale = 1): Float32Array {
  const rand = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; ++i) out[i] = normal(rand) * scale;
  return out;
}

export function randIds(n: number, max: number, seed: number): Int32Array {
  const rand = rng(seed);
  const out = new Int32Array(n);
  for (let i = 0; i < n; ++i) out[i] = Math.floor(rand() * max);
  return out;
}

function clone(a: HostArray): HostArray {
  return a instanceof Int32Array ? new Int32Array(a) : new Float32Array(a);
}

function guarded(a: HostArray): HostArray {
  const out = a instanceof Int32Array ? new Int32Array(a.length + GUARD) : new Float32Array(a.length + GUARD);
  out.set(a);
  new Uint32Array(out.buffer, a.length * 4, GUARD).fill(SENTINEL_BITS);
  return out;
}

export function expectClose(label: string, got: HostArray, want: HostArray, tol: Tolerance): OutputReport {
  assert.equal(got.length, want.length, `${label}: length ${got.length}, expected ${want.length}`);
  const exact = want instanceof Int32Array;
  let maxAbs = 0;
  let maxRel = 0;
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; ++i) {
    const g = got[i]!;
    const w = want[i]!;
    if (Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w))) continue;
    const err = Math.abs(g - w);
    const bound = exact ? 0 : tol.abs + tol.rel * Math.abs(w);
    if (!(err <= bound)) {
      const excess = Number.isNaN(err) ? Infinity : err - bound;
      if (worst < 0 || excess > worstExcess) {
        worst = i;
        worstExcess = excess;
      }
    }
    if (Number.isFinite(err)) {
      maxAbs = Math.max(maxAbs, err);
      // Relative error only where the reference is above the absolute tolerance (else it is noise).
      if (Math.abs(w) > tol.abs) maxRel = Math.max(maxRel, err / Math.abs(w));
    } else {
      maxAbs = Infinity;
    }
  }
  if (worst >= 0) {
    assert.fail(
      `${label}: element ${worst} is ${got[worst]}, reference ${want[worst]} ` +
        `(tolerance abs ${tol.abs} + rel ${tol.rel}; max abs error ${maxAbs}, max rel error ${maxRel})`,
    );
  }
  return { maxAbs, maxRel, n: want.length, tol };
}

export async function runCase(gpu: Gpu, c: Case): Promise<CaseReport> {
  const buffers: Record<string, GPUBuffer> = {};
  const outputs = Object.entries(c.outputs).map(([name, spec]) => {
    const init = ArrayBuffer.isView(spec) ? spec : spec.init;
    const tol = ArrayBuffer.isView(spec) ? c.tol : (spec.tol ?? c.tol);
    return { name, init, tol };
  });
  try {
    for (const [name, data] of Object.entries(c.inputs)) buffers[name] = gpu.upload(data, name);
    for (const o of outputs) buffers[o.name] = gpu.upload(guarded(o.init), o.name);
    c.gpu(gpu, buffers);

    const arrays: Record<string, HostArray> = {};
    for (const [name, data] of Object.entries(c.inputs)) arrays[name] = clone(data);
    for (const o of outputs) arrays[o.name] = clone(o.init);
    c.cpu(arrays);

    const report: CaseReport = { name: c.name, outputs: {} };
    for (const o of outputs) {
      const raw = await gpu.read(buffers[o.name]!, (o.init.length + GUARD) * 4);
      const guard = new Uint32Array(raw, o.init.length * 4, GUARD);
      const touched = guard.findIndex((bits) => bits !== SENTINEL_BITS);
      assert.equal(touched, -1, `${c.name}: ${o.name} was written ${touched} elements past its end`);
      const got = o.init instanceof Int32Array ? new Int32Array(raw, 0, o.init.length) : new Float32Array(raw, 0, o.init.length);
      report.outputs[o.name] = expectClose(`${c.name}: ${o.name}`, got, arrays[o.name]!, o.tol);
    }
    return report;
  } finally {
    try {
      gpu.flush(); // anything still recorded must be submitted before its buffers go away
    } catch {
      // the error was already thrown to the caller
    }
    for (const b of Object.values(buffers)) b.destroy();
  }
}

/**
 * One diagnostic line: "<case> <output>: max abs <e>, max rel <e> over <n>; ..." followed by the case
 * tolerance when given; an output whose tolerance differs from it shows its own.
 */
export function describe(report: CaseReport, caseTol?: Tolerance): string {
  const tolText = (a: Tolerance): string => `tol abs ${+a.abs.toPrecision(3)} rel ${+a.rel.toPrecision(3)}`;
  const same = (a: Tolerance): boolean => caseTol !== undefined && a.abs === caseTol.abs && a.rel === caseTol.rel;
  const parts = Object.entries(report.outputs).map(
    ([name, r]) =>
      `${name}: max abs ${r.maxAbs.toExponential(2)}, max rel ${r.maxRel.toExponential(2)} over ${r.n}` +
      (same(r.tol) ? '' : ` (${tolText(r.tol)})`),
  );
  return `${report.name} ${parts.join('; ')}` + (caseTol ? ` (${tolText(caseTol)})` : '');
}
