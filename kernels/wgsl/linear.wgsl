// Frozen base projection y = x W^T + b (W [O, I]) and its input gradient dx = dy W
// (native/cpu/linear.cc). Both are tiled GEMMs: a 16x16 workgroup computes a 64x64 output tile, each
// invocation a 4x4 block (rows ty + 16i, columns tx + 16j), streaming 16-deep slices of both operands
// through workgroup memory. Grid: x over output-column tiles, y over output-row tiles.

const TILE: u32 = 64u;
const KT: u32 = 16u;

struct Dims {
  M: u32,      // output rows (T)
  N: u32,      // output columns (O for linear, I for the backward)
  K: u32,      // reduction length (I for linear, O for the backward)
  flag: u32,   // linear: has bias; backward: accumulate into dx
}

// k-major slices: As[k * TILE + row], Bs[k * TILE + col].
var<workgroup> As: array<f32, 1024>;
var<workgroup> Bs: array<f32, 1024>;

fn multiply_slice(tx: u32, ty: u32, acc: ptr<function, array<f32, 16>>) {
  for (var k = 0u; k < KT; k++) {
    var a: array<f32, 4>;
    var b: array<f32, 4>;
    for (var i = 0u; i < 4u; i++) {
      a[i] = As[k * TILE + ty + 16u * i];
      b[i] = Bs[k * TILE + tx + 16u * i];
    }
    for (var i = 0u; i < 4u; i++) {
      for (var j = 0u; j < 4u; j++) {
        (*acc)[i * 4u + j] += a[i] * b[j];
      }
    }
  }
}

@group(0) @binding(0) var<storage, read_write> y_TO: array<f32>;
@group(0) @binding(1) var<storage, read> x_TI: array<f32>;
@group(0) @binding(2) var<storage, read> W_OI: array<f32>;
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
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < K; k0 += KT) {
    for (var p = 0u; p < 4u; p++) {
      let e = li + 256u * p;
      let r = e / KT;
      let kk = e % KT;
      var av = 0.0;
      var bv = 0.0;
      if (m0 + r < M && k0 + kk < K) {
        av = x_TI[(m0 + r) * K + k0 + kk];
      }
      if (n0 + r < N && k0 + kk < K) {
        bv = W_OI[(n0 + r) * K + k0 + kk];
      }
      As[kk * TILE + r] = av;
      Bs[kk * TILE + r] = bv;
    }
    workgroupBarrier();
    multiply_slice(lid.x, lid.y, &acc);
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y + 16u * i;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x + 16u * j;
      if (m < M && n < N) {
        var v = acc[i * 4u + j];
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
@group(0) @binding(2) var<storage, read> bw_W: array<f32>;
@group(0) @binding(3) var<uniform> bwd: Dims;

@compute @workgroup_size(16, 16)
fn linear_backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = bwd.M;
  let N = bwd.N;
  let K = bwd.K;
  let m0 = wg.y * TILE;
  let n0 = wg.x * TILE;
  let li = lid.y * 16u + lid.x;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < K; k0 += KT) {
    for (var p = 0u; p < 4u; p++) {
      let e = li + 256u * p;
      // dy [M, K] row-major: 16 consecutive k per row.
      let r = e / KT;
      let kk = e % KT;
      var av = 0.0;
      if (m0 + r < M && k0 + kk < K) {
        av = bw_dy[(m0 + r) * K + k0 + kk];
      }
      As[kk * TILE + r] = av;
      // W [K, N] row-major: 64 consecutive n per k.
      let bk = e / TILE;
      let c = e % TILE;
      var bv = 0.0;
      if (k0 + bk < K && n0 + c < N) {
        bv = bw_W[(k0 + bk) * N + n0 + c];
      }
      Bs[bk * TILE + c] = bv;
    }
    workgroupBarrier();
    multiply_slice(lid.x, lid.y, &acc);
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y + 16u * i;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x + 16u * j;
      if (m < M && n < N) {
        let v = acc[i * 4u + j];
        if (bwd.flag != 0u) {
          bw_dx[m * N + n] = bw_dx[m * N + n] + v;
        } else {
          bw_dx[m * N + n] = v;
        }
      }
    }
  }
}
