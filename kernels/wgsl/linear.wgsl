// Frozen base projection y = x W^T + b (W [O, I]) and its input gradient dx = dy W
// (native/cpu/linear.cc). Both are tiled GEMMs: a 16x16 workgroup computes a 64x64 output tile, each
// invocation a 4x4 block (rows 4ty..4ty+3, columns 4tx..4tx+3), streaming 16-deep slices of both
// operands through workgroup memory as vec4s (a quarter of the workgroup-memory reads of scalar
// tiles, which is what limits llvmpipe). Grid: x over output-column tiles, y over output-row tiles.
// W is weight_t: f32 here, f16 in the ".f16" variant the device derives (widened to f32 on load, so
// the products and sums stay f32).

alias weight_t = f32;

const TILE: u32 = 64u;
const KT: u32 = 16u;

struct Dims {
  M: u32,      // output rows (T)
  N: u32,      // output columns (O for linear, I for the backward)
  K: u32,      // reduction length (I for linear, O for the backward)
  flag: u32,   // linear: has bias; backward: accumulate into dx
}

// As[k * 16 + r4] holds rows 4r4..4r4+3 of the slice at depth k; Bs[k * 16 + c4] columns 4c4..4c4+3.
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

fn multiply_slice(tx: u32, ty: u32, acc: ptr<function, array<vec4<f32>, 4>>) {
  for (var k = 0u; k < KT; k++) {
    let a = As[k * 16u + ty];
    let b = Bs[k * 16u + tx];
    (*acc)[0] += a.x * b;
    (*acc)[1] += a.y * b;
    (*acc)[2] += a.z * b;
    (*acc)[3] += a.w * b;
  }
}

@group(0) @binding(0) var<storage, read_write> y_TO: array<f32>;
@group(0) @binding(1) var<storage, read> x_TI: array<f32>;
@group(0) @binding(2) var<storage, read> W_OI: array<weight_t>;
@group(0) @binding(3) var<storage, read> b_O: array<f32>;
@group(0) @binding(4) var<uniform> fwd: Dims;

@compute @workgroup_size(16, 16)
fn linear(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = fwd.M;
  let N = fwd.N;
  let K = fwd.K;
  let m0 = wg.y * TILE;
  let n0 = wg.x * TILE;
  let li = lid.y * 16u + lid.x;
  // Loader role: depth kk of row group r4, for both x (rows of y) and W (columns of y).
  let kk = li % KT;
  let r4 = li / KT;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < K; k0 += KT) {
    var av = vec4<f32>(0.0);
    var bv = vec4<f32>(0.0);
    if (k0 + kk < K) {
      for (var i = 0u; i < 4u; i++) {
        let r = r4 * 4u + i;
        if (m0 + r < M) {
          av[i] = x_TI[(m0 + r) * K + k0 + kk];
        }
        if (n0 + r < N) {
          bv[i] = f32(W_OI[(n0 + r) * K + k0 + kk]);
        }
      }
    }
    As[kk * 16u + r4] = av;
    Bs[kk * 16u + r4] = bv;
    workgroupBarrier();
    multiply_slice(lid.x, lid.y, &acc);
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x * 4u + j;
      if (m < M && n < N) {
        var v = acc[i][j];
        if (fwd.flag != 0u) {
          v += b_O[n];
        }
        y_TO[m * N + n] = v;
      }
    }
  }
}

@group(0) @binding(0) var<storage, read_write> bw_dx: array<f32>;
@group(0) @binding(1) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bw_W: array<weight_t>;
@group(0) @binding(3) var<uniform> bwd: Dims;

@compute @workgroup_size(16, 16)
fn linear_backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = bwd.M;
  let N = bwd.N;
  let K = bwd.K;
  let m0 = wg.y * TILE;
  let n0 = wg.x * TILE;
  let li = lid.y * 16u + lid.x;
  // dy [M, K]: depth ka of row group r4. W [K, N]: depth kb, four consecutive columns from 4c4.
  let ka = li % KT;
  let r4 = li / KT;
  let kb = li / 16u;
  let c4 = li % 16u;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < K; k0 += KT) {
    var av = vec4<f32>(0.0);
    var bv = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
      let r = r4 * 4u + i;
      if (m0 + r < M && k0 + ka < K) {
        av[i] = bw_dy[(m0 + r) * K + k0 + ka];
      }
      let c = n0 + c4 * 4u + i;
      if (k0 + kb < K && c < N) {
        bv[i] = f32(bw_W[(k0 + kb) * N + c]);
      }
    }
    As[ka * 16u + r4] = av;
    Bs[kb * 16u + c4] = bv;
    workgroupBarrier();
    multiply_slice(lid.x, lid.y, &acc);
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x * 4u + j;
      if (m < M && n < N) {
        let v = acc[i][j];
        if (bwd.flag != 0u) {
          bw_dx[m * N + n] = bw_dx[m * N + n] + v;
        } else {
          bw_dx[m * N + n] = v;
        }
      }
    }
  }
}
