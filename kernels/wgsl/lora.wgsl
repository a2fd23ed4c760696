// LoRA branch of a projection, y += s (x A^T) B^T with u = x A^T kept, and its gradients for A, B and
// the input (native/cpu/lora.cc). Every product here is thin (one side is the rank R, a few dozen at
// most), so each invocation computes one output element with a plain loop over the reduction; the
// flat output index is spread over a 2-D grid of workgroups. All entries bind: 0 the output, 1 and 2
// the two operands, 3 the dims.
//
// The forward entries work on rows t0..t0+T-1 of x and y, so that a decode batch mixing adapters runs
// each adapter's branch over its own contiguous rows of shared activations; u is always the segment's
// own [T, R]. The backward entries ignore t0 (training runs one adapter over every row).

struct Dims {
  T: u32,
  I: u32,
  O: u32,
  R: u32,
  scale: f32,
  t0: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * 256u + li;
}

// u[t, r] = sum_i x[t0 + t, i] A[r, i]   (a = x [t0 + T, I], b = A [R, I])
@compute @workgroup_size(256)
fn lora_down(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
  let idx = flat_index(wg, nwg, li);
  if (idx >= dims.T * dims.R) {
    return;
  }
  let t = idx / dims.R;
  let r = idx % dims.R;
  let xrow = (dims.t0 + t) * dims.I;
  var s = 0.0;
  for (var i = 0u; i < dims.I; i++) {
    s += a[xrow + i] * b[r * dims.I + i];
  }
  out[idx] = s;
}

// y[t0 + t, o] += scale * sum_r u[t, r] B[o, r]   (out = y [t0 + T, O], a = u [T, R], b = B [O, R])
@compute @workgroup_size(256)
fn lora_up(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
  let idx = flat_index(wg, nwg, li);
  if (idx >= dims.T * dims.O) {
    return;
  }
  let t = idx / dims.O;
  let o = idx % dims.O;
  var s = 0.0;
  for (var r = 0u; r < dims.R; r++) {
    s += a[t * dims.R + r] * b[o * dims.R + r];
  }
  let y = dims.t0 * dims.O + idx;
  out[y] = out[y] + dims.scale * s;
}

// dB[o, r] += scale * sum_t dy[t, o] u[t, r]   (a = dy [T, O], b = u [T, R])
@compute @workgroup_size(256)
fn lora_grad_B(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
  let idx = flat_index(wg, nwg, li);
  if (idx >= dims.O * dims.R) {
    return;
  }
  let o = idx / dims.R;
  let r = idx % dims.R;
  var s = 0.0;
  for (var t = 0u; t < dims.T; t++) {
    s += a[t * dims.O + o] * b[t * dims.R + r];
  }
  out[idx] = out[idx] + dims.scale * s;
}

// du[t, r] = scale * sum_o dy[t, o] B[o, r]   (a = dy [T, O], b = B [O, R])
@compute @workgroup_size(256)
fn lora_du(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
  let idx = flat_index(wg, nwg, li);
  if (idx >= dims.T * dims.R) {
    return;
  }
  let t = idx / dims.R;
  let r = idx % dims.R;
  var s = 0.0;
  for (var o = 0u; o < dims.O; o++) {
    s += a[t * dims.O + o] * b[o * dims.R + r];
  }
  out[idx] = dims.scale * s;
}

// dA[r, i] += sum_t du[t, r] x[t, i]   (a = du [T, R], b = x [T, I])
@compute @workgroup_size(256)
fn lora_grad_A(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
  let idx = flat_index(wg, nwg, li);
  if (idx >= dims.R * dims.I) {
    return;
  }
  let r = idx / dims.I;
  let i = idx % dims.I;
  var s = 0.0;
  for (var t = 0u; t < dims.T; t++) {
    s += a[t * dims.R + r] * b[t * dims.I + i];
  }
  out[idx] = out[idx] + s;
}

// dx[t, i] += sum_r du[t, r] A[r, i]   (a = du [T, R], b = A [R, I])
@compute @workgroup_size(256)
fn lora_dx(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
  let idx = flat_index(wg, nwg, li);
  if (idx >= dims.T * dims.I) {
    return;
  }
  let t = idx / dims.I;
  let i = idx % dims.I;
  var s = 0.0;
  for (var r = 0u; r < dims.R; r++) {
    s += a[t * dims.R + r] * b[r * dims.I + i];
  }
  out[idx] = out[idx] + s;
}
