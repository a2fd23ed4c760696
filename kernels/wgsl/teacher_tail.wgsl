// Teacher targets of one row beyond its top-K: the log of the probability mass outside the top-K
// and the log-probability of the sampled token (native/engine/sdpo_step.cc teacher_targets).
// One workgroup per row. Membership in the top-K follows topk's order (value descending, ties to the
// lower id): v is in it iff logp[v] > last value, or equal with v <= the last id.

struct Params {
  R: u32,
  V: u32,
  K: u32,
  negInf: f32,  // -inf from the host: WGSL constant expressions cannot hold it
}

@group(0) @binding(0) var<storage, read_write> tail: array<f32>;
@group(0) @binding(1) var<storage, read_write> token: array<f32>;
@group(0) @binding(2) var<storage, read> logp: array<f32>;
@group(0) @binding(3) var<storage, read> idx: array<i32>;
@group(0) @binding(4) var<storage, read> val: array<f32>;
@group(0) @binding(5) var<storage, read> y: array<i32>;
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn teacher_tail(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
  let r = wg.y * nwg.x + wg.x;
  if (r >= p.R) {
    return;
  }
  let row = r * p.V;
  let lastVal = val[r * p.K + p.K - 1u];
  let lastId = idx[r * p.K + p.K - 1u];
  var acc = 0.0;
  for (var v = li; v < p.V; v += 256u) {
    let x = logp[row + v];
    let inK = x > lastVal || (x == lastVal && i32(v) <= lastId);
    if (!inK) {
      acc += exp(x);
    }
  }
  part[li] = acc;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (li < s) {
      part[li] += part[li + s];
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    let total = part[0];
    tail[r] = select(p.negInf, log(total), total > 0.0);
    token[r] = logp[row + u32(y[r])];
  }
}
