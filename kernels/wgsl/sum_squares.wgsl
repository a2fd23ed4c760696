// Partial sums of squares for the global gradient norm: workgroup g writes the sum over its strided
// share of x to out[g]; the host adds the partials in double precision.

struct Params {
  n: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn sum_squares(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
  let stride = nwg.x * 256u;
  var acc = 0.0;
  for (var i = wg.x * 256u + li; i < p.n; i += stride) {
    let v = x[i];
    acc += v * v;
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
    out[wg.x] = part[0];
  }
}
