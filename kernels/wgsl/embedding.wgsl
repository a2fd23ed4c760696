// Token embedding lookup out[t, :] = table[ids[t], :] (native/cpu/embedding.cc). One invocation per
// output element, the flat index spread over a 2-D grid of workgroups. An id outside 0..V-1 yields a
// zero row rather than a read outside the table. The table is weight_t: f32 here, f16 in the ".f16"
// variant the device derives.

alias weight_t = f32;

struct Dims {
  T: u32,
  H: u32,
  V: u32,
}

@group(0) @binding(0) var<storage, read_write> out_TH: array<f32>;
@group(0) @binding(1) var<storage, read> table_VH: array<weight_t>;
@group(0) @binding(2) var<storage, read> ids_T: array<i32>;
@group(0) @binding(3) var<uniform> dims: Dims;

@compute @workgroup_size(256)
fn embedding(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
  let flat = (wg.y * nwg.x + wg.x) * 256u + li;
  if (flat >= dims.T * dims.H) {
    return;
  }
  let t = flat / dims.H;
  let h = flat % dims.H;
  let id = ids_T[t];
  if (id < 0 || u32(id) >= dims.V) {
    out_TH[flat] = 0.0;
    return;
  }
  out_TH[flat] = f32(table_VH[u32(id) * dims.H + h]);
}
