// Row-wise log-softmax over the vocabulary and its backward (native/cpu/log_softmax.cc).
// One workgroup per row; a row index is spread over a 2-D grid of workgroups.
// The input of each entry is declared read_write so that the same buffer may also be bound as the
// output (in place, as the CPU allows): WebGPU permits aliasing only between writable bindings. One
// bind group layout serves every entry of the file, so binding 2 is read_write in all of them.

const WG = 256u;

struct Dims {
  R: u32,
  V: u32,
}

var<workgroup> red: array<f32, WG>;

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

fn reduceSum(x: f32, li: u32) -> f32 {
  red[li] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      red[li] += red[li + s];
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

// ---- log_softmax with lse ----------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> aOut: array<f32>;
@group(0) @binding(1) var<storage, read_write> aLse: array<f32>;
@group(0) @binding(2) var<storage, read_write> aX: array<f32>;
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
  var sum = 0.0;
  for (var v = li; v < V; v += WG) {
    sum += exp(aX[base + v] - mx);
  }
  let lse = mx + log(reduceSum(sum, li));
  for (var v = li; v < V; v += WG) {
    aOut[base + v] = aX[base + v] - lse;
  }
  if (li == 0u) {
    aLse[row] = lse;
  }
}

// ---- log_softmax without lse -------------------------------------------------------------------
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
  var sum = 0.0;
  for (var v = li; v < V; v += WG) {
    sum += exp(bX[base + v] - mx);
  }
  let lse = mx + log(reduceSum(sum, li));
  for (var v = li; v < V; v += WG) {
    bOut[base + v] = bX[base + v] - lse;
  }
}

// ---- backward: dlogits = ds - exp(logp) * sum(ds) ----------------------------------------------
@group(0) @binding(0) var<storage, read_write> cDl: array<f32>;
@group(0) @binding(1) var<storage, read_write> cDs: array<f32>;
@group(0) @binding(2) var<storage, read_write> cLogp: array<f32>;
@group(0) @binding(3) var<uniform> cDims: Dims;

@compute @workgroup_size(256)
fn log_softmax_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= cDims.R) {
    return;
  }
  let V = cDims.V;
  let base = row * V;
  var sum = 0.0;
  for (var v = li; v < V; v += WG) {
    sum += cDs[base + v];
  }
  let s = reduceSum(sum, li);
  for (var v = li; v < V; v += WG) {
    cDl[base + v] = cDs[base + v] - exp(cLogp[base + v]) * s;
  }
}
