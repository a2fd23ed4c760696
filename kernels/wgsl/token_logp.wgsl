// out[r] = logp[r, y[r]]: the log-probability of each row's token (base and scoring passes).

struct Params {
  R: u32,
  V: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> logp: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn token_logp(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let r = wg.x * 64u + li;
  if (r >= p.R) {
    return;
  }
  out[r] = logp[r * p.V + u32(y[r])];
}
