// SwiGLU gate h = silu(g) * u and its gradients (native/cpu/swiglu.cc), elementwise over n values
// spread over a 2-D grid of workgroups. Each entry point has its own bindings; a binding number
// shared by two entries has the same access mode in both (one bind group layout per file).

struct Dims {
  n: u32,
}

// The sigmoid without overflowing exp for large |g|.
fn sigmoid(g: f32) -> f32 {
  if (g >= 0.0) {
    return 1.0 / (1.0 + exp(-g));
  }
  let e = exp(g);
  return e / (1.0 + e);
}

fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * 256u + li;
}

@group(0) @binding(0) var<storage, read_write> h_n: array<f32>;
@group(0) @binding(1) var<storage, read> g_n: array<f32>;
@group(0) @binding(2) var<storage, read> u_n: array<f32>;
@group(0) @binding(3) var<uniform> fwd: Dims;

@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
  let i = flat_index(wg, nwg, li);
  if (i >= fwd.n) {
    return;
  }
  let g = g_n[i];
  h_n[i] = g * sigmoid(g) * u_n[i];
}

@group(0) @binding(0) var<storage, read_write> bw_dg: array<f32>;
@group(0) @binding(1) var<storage, read> bw_g: array<f32>;
@group(0) @binding(2) var<storage, read> bw_u: array<f32>;
@group(0) @binding(3) var<storage, read> bw_dh: array<f32>;
@group(0) @binding(4) var<storage, read_write> bw_du: array<f32>;
@group(0) @binding(5) var<uniform> bwd: Dims;

@compute @workgroup_size(256)
fn swiglu_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
  let i = flat_index(wg, nwg, li);
  if (i >= bwd.n) {
    return;
  }
  let g = bw_g[i];
  let sg = sigmoid(g);
  let dh = bw_dh[i];
  bw_du[i] = dh * g * sg;
  bw_dg[i] = dh * bw_u[i] * sg * (1.0 + g * (1.0 - sg));
}
