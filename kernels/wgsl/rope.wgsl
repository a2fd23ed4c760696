// Rotary position embedding, rotate-half layout, in place on x[T, N, D] with cos/sin tables
// [T, D/2] (native/cpu/rope.cc). rope rotates by +angle, rope_backward by -angle (the inverse).
// One invocation per (t, n, i < D/2) pair; the flat index is spread over a 2-D grid of workgroups.

struct Dims {
  T: u32,
  N: u32,
  D: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> cosT: array<f32>;
@group(0) @binding(2) var<storage, read> sinT: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

fn rotate(flat: u32, sign: f32) {
  let D2 = dims.D / 2u;
  if (flat >= dims.T * dims.N * D2) {
    return;
  }
  let i = flat % D2;
  let tn = flat / D2;
  let t = tn / dims.N;
  let base = tn * dims.D;
  let c = cosT[t * D2 + i];
  let s = sign * sinT[t * D2 + i];
  let x1 = x[base + i];
  let x2 = x[base + i + D2];
  x[base + i] = x1 * c - x2 * s;
  x[base + i + D2] = x2 * c + x1 * s;
}

@compute @workgroup_size(64)
fn rope(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  rotate((wg.y * nwg.x + wg.x) * 64u + li, 1.0);
}

@compute @workgroup_size(64)
fn rope_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
  rotate((wg.y * nwg.x + wg.x) * 64u + li, -1.0);
}
