// RMSNorm y = w * x / sqrt(mean(x^2) + eps) per row, keeping rstd for the backward, and its input
// gradient dx = rstd * (g - xhat * mean(g * xhat)), g = dy * w (native/cpu/rmsnorm.cc). One workgroup
// per row (row index spread over a 2-D grid); the row sums are tree reductions in workgroup memory.
// A binding number shared by both entries has the same access mode in both (one layout per file).

const WG: u32 = 256u;

struct Dims {
  N: u32,
  D: u32,
  eps: f32,
  accumulate: u32,
}

var<workgroup> partial: array<f32, 256>;

// Sum of `v` over the workgroup; every invocation gets the result.
fn workgroup_sum(v: f32, li: u32) -> f32 {
  partial[li] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
    if (li < stride) {
      partial[li] = partial[li] + partial[li + stride];
    }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  return total;
}

@group(0) @binding(0) var<storage, read_write> y_ND: array<f32>;
@group(0) @binding(1) var<storage, read_write> rstd_N: array<f32>;
@group(0) @binding(2) var<storage, read> x_ND: array<f32>;
@group(0) @binding(3) var<storage, read> w_D: array<f32>;
@group(0) @binding(4) var<uniform> fwd: Dims;

@compute @workgroup_size(256)
fn rmsnorm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
  let n = wg.y * nwg.x + wg.x;
  // Uniform control flow: a whole workgroup leaves together.
  if (n >= fwd.N) {
    return;
  }
  let D = fwd.D;
  let base = n * D;
  var ss = 0.0;
  for (var d = li; d < D; d += WG) {
    let v = x_ND[base + d];
    ss += v * v;
  }
  let r = 1.0 / sqrt(workgroup_sum(ss, li) / f32(D) + fwd.eps);
  if (li == 0u) {
    rstd_N[n] = r;
  }
  for (var d = li; d < D; d += WG) {
    y_ND[base + d] = w_D[d] * (x_ND[base + d] * r);
  }
}

@group(0) @binding(0) var<storage, read_write> bw_dx: array<f32>;
@group(0) @binding(1) var<storage, read_write> bw_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bw_x: array<f32>;
@group(0) @binding(3) var<storage, read> bw_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> bw_w: array<f32>;
@group(0) @binding(5) var<uniform> bwd: Dims;

@compute @workgroup_size(256)
fn rmsnorm_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
  let n = wg.y * nwg.x + wg.x;
  if (n >= bwd.N) {
    return;
  }
  let D = bwd.D;
  let base = n * D;
  let r = bw_rstd[n];
  var dot = 0.0;
  for (var d = li; d < D; d += WG) {
    dot += bw_dy[base + d] * bw_w[d] * bw_x[base + d] * r;
  }
  let mean = workgroup_sum(dot, li) / f32(D);
  for (var d = li; d < D; d += WG) {
    let g = bw_dy[base + d] * bw_w[d];
    let v = r * (g - bw_x[base + d] * r * mean);
    if (bwd.accumulate != 0u) {
      bw_dx[base + d] = bw_dx[base + d] + v;
    } else {
      bw_dx[base + d] = v;
    }
  }
}
