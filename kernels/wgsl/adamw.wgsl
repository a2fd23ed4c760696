// AdamW with decoupled weight decay, torch.optim.AdamW semantics (native/cpu/adamw.cc). The bias
// corrections are folded on the host in double precision into stepSize = lr / (1 - beta1^step) and
// bc2Sqrt = sqrt(1 - beta2^step), exactly as the CPU does; the per-element update is f32 like the CPU's.

struct Params {
  n: u32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  stepSize: f32,
  bc2Sqrt: f32,
  decay: f32,
}

@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<uniform> prm: Params;

@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * nwg.x + wg.x) * 256u + li;
  if (i >= prm.n) {
    return;
  }
  let gi = g[i];
  let mi = prm.beta1 * m[i] + (1.0 - prm.beta1) * gi;
  let vi = prm.beta2 * v[i] + (1.0 - prm.beta2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  p[i] = p[i] * prm.decay - prm.stepSize * mi / (sqrt(vi) / prm.bc2Sqrt + prm.eps);
}
