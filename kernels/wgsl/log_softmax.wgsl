// Row-wise log-softmax over the vocabulary and its backward (native/cpu/log_softmax.cc).
// One workgroup per row; a row index is spread over a 2-D grid of workgroups.
// WebGPU forbids binding one buffer twice when either binding is writable, so running in place (as
// the CPU allows) has entries of its own. One bind group layout serves every entry of the file:
// bindings 0 and 1 are read_write everywhere, binding 2 read-only.

const WG = 256u;

struct Dims {
  R: u32,
  V: u32,
}

var<workgroup> red: array<f32, WG>;
var<workgroup> redC: array<vec2<f32>, WG>;

// Compensated (Neumaier) sums: (sum, running error) pairs, so a 152k-entry row sums to about f32
// rounding of the result, as the CPU's double sum does.
fn twoSum(a: vec2<f32>, x: f32) -> vec2<f32> {
  let t = a.x + x;
  let e = select((x - t) + a.x, (a.x - t) + x, abs(a.x) >= abs(x));
  return vec2<f32>(t, a.y + e);
}

fn reduceSumC(x: vec2<f32>, li: u32) -> f32 {
  redC[li] = x;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    if (li < st) {
      let b = redC[li + st];
      let a = twoSum(redC[li], b.x);
      redC[li] = vec2<f32>(a.x, a.y + b.y);
    }
    workgroupBarrier();
  }
  let r = redC[0];
  workgroupBarrier();
  return r.x + r.y;
}

fn reduceMax(x: f32, li: u32) -> f32 {
  red[li] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      red[li] = max(red[li], red[li + s]);
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

// Each row: lse = max + log(sum(exp(x - max))).
// ---- log_softmax: out, lse, logits -------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> aOut: array<f32>;
@group(0) @binding(1) var<storage, read_write> aLse: array<f32>;
@group(0) @binding(2) var<storage, read> aX: array<f32>;
@group(0) @binding(3) var<uniform> aDims: Dims;

@compute @workgroup_size(256)
fn log_softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= aDims.R) {
    return;
  }
  let V = aDims.V;
  let base = row * V;
  var mx = aX[base];
  for (var v = li; v < V; v += WG) {
    mx = max(mx, aX[base + v]);
  }
  mx = reduceMax(mx, li);
  var sum = vec2<f32>(0.0, 0.0);
  for (var v = li; v < V; v += WG) {
    sum = twoSum(sum, exp(aX[base + v] - mx));
  }
  let lse = mx + log(reduceSumC(sum, li));
  for (var v = li; v < V; v += WG) {
    aOut[base + v] = aX[base + v] - lse;
  }
  if (li == 0u) {
    aLse[row] = lse;
  }
}

// ---- log_softmax_no_lse: out, logits -----------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> bOut: array<f32>;
@group(0) @binding(1) var<storage, read_write> bX: array<f32>;
@group(0) @binding(2) var<uniform> bDims: Dims;

@compute @workgroup_size(256)
fn log_softmax_no_lse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= bDims.R) {
    return;
  }
  let V = bDims.V;
  let base = row * V;
  var mx = bX[base];
  for (var v = li; v < V; v += WG) {
    mx = max(mx, bX[base + v]);
  }
  mx = reduceMax(mx, li);
  var sum = vec2<f32>(0.0, 0.0);
  for (var v = li; v < V; v += WG) {
    sum = twoSum(sum, exp(bX[base + v] - mx));
  }
  let lse = mx + log(reduceSumC(sum, li));
  for (var v = li; v < V; v += WG) {
    bOut[base + v] = bX[base + v] - lse;
  }
}

// ---- log_softmax_inplace: x (logits in, log-probabilities out), lse ----------------------------
@group(0) @binding(0) var<storage, read_write> cX: array<f32>;
@group(0) @binding(1) var<storage, read_write> cLse: array<f32>;
@group(0) @binding(2) var<uniform> cDims: Dims;

@compute @workgroup_size(256)
fn log_softmax_inplace(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= cDims.R) {
    return;
  }
  let V = cDims.V;
  let base = row * V;
  var mx = cX[base];
  for (var v = li; v < V; v += WG) {
    mx = max(mx, cX[base + v]);
  }
  mx = reduceMax(mx, li);
  var sum = vec2<f32>(0.0, 0.0);
  for (var v = li; v < V; v += WG) {
    sum = twoSum(sum, exp(cX[base + v] - mx));
  }
  let lse = mx + log(reduceSumC(sum, li));
  for (var v = li; v < V; v += WG) {
    cX[base + v] -= lse;
  }
  if (li == 0u) {
    cLse[row] = lse;
  }
}

// ---- log_softmax_inplace_no_lse: x -------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> dX: array<f32>;
@group(0) @binding(1) var<uniform> dDims: Dims;

@compute @workgroup_size(256)
fn log_softmax_inplace_no_lse(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= dDims.R) {
    return;
  }
  let V = dDims.V;
  let base = row * V;
  var mx = dX[base];
  for (var v = li; v < V; v += WG) {
    mx = max(mx, dX[base + v]);
  }
  mx = reduceMax(mx, li);
  var sum = vec2<f32>(0.0, 0.0);
  for (var v = li; v < V; v += WG) {
    sum = twoSum(sum, exp(dX[base + v] - mx));
  }
  let lse = mx + log(reduceSumC(sum, li));
  for (var v = li; v < V; v += WG) {
    dX[base + v] -= lse;
  }
}

// Backward, each row: dlogits = ds - exp(logp) * sum(ds).
// ---- log_softmax_backward: dlogits, ds, logp ---------------------------------------------------
@group(0) @binding(0) var<storage, read_write> eDl: array<f32>;
@group(0) @binding(1) var<storage, read_write> eDs: array<f32>;
@group(0) @binding(2) var<storage, read> eLogp: array<f32>;
@group(0) @binding(3) var<uniform> eDims: Dims;

@compute @workgroup_size(256)
fn log_softmax_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= eDims.R) {
    return;
  }
  let V = eDims.V;
  let base = row * V;
  var sum = vec2<f32>(0.0, 0.0);
  for (var v = li; v < V; v += WG) {
    sum = twoSum(sum, eDs[base + v]);
  }
  let s = reduceSumC(sum, li);
  for (var v = li; v < V; v += WG) {
    eDl[base + v] = eDs[base + v] - exp(eLogp[base + v]) * s;
  }
}

// ---- log_softmax_backward_inplace: ds (in, dlogits out), logp ----------------------------------
@group(0) @binding(0) var<storage, read_write> fDs: array<f32>;
@group(0) @binding(1) var<storage, read_write> fLogp: array<f32>;
@group(0) @binding(2) var<uniform> fDims: Dims;

@compute @workgroup_size(256)
fn log_softmax_backward_inplace(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) li: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= fDims.R) {
    return;
  }
  let V = fDims.V;
  let base = row * V;
  var sum = vec2<f32>(0.0, 0.0);
  for (var v = li; v < V; v += WG) {
    sum = twoSum(sum, fDs[base + v]);
  }
  let s = reduceSumC(sum, li);
  for (var v = li; v < V; v += WG) {
    fDs[base + v] -= exp(fLogp[base + v]) * s;
  }
}
