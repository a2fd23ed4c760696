// y = a*y + b*x over n values; a == 0 ignores y's old contents. The driver's residual adds, EMA
// update and gradient clipping (loops inline in native/engine/*.cc).

struct Params {
  n: u32,
  a: f32,
  b: f32,
}

@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn axpby(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * nwg.x + wg.x) * 256u + li;
  if (i >= p.n) {
    return;
  }
  if (p.a == 0.0) {
    y[i] = p.b * x[i];
  } else {
    y[i] = p.a * y[i] + p.b * x[i];
  }
}
