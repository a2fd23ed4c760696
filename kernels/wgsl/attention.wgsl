// Causal grouped-query attention (native/cpu/attention.cc) and its backward, flash-style: keys and
// values stream through workgroup tiles and each query row keeps a running max and sum, so no T x T
// score matrix exists. q [T, N, D] at positions q0..q0+T-1; k/v [q0+T, NKV, D]; out [T, N, D];
// lse [N, T]. The backward (q0 = 0) first stores Di = dout_i . out_i per (head, row) in di [N, T], then
// writes dq [T, N, D] and dk/dv [T, NKV, D] (summed over the query heads of each group), recomputing the
// probabilities from lse.
// Bindings 0 and 1 are read_write in every entry (one bind group layout serves the whole file), the
// rest read-only.
// One invocation owns one row (a query row in the forward and for dq, a key row for dk/dv) with its
// vectors in private arrays of MAXD floats, so D <= MAXD.

override HD: u32 = 128u;  // head dim D; sizes the workgroup tiles
override BK: u32 = 16u;   // rows per workgroup tile (HD * BK floats per tile), at most MAXBK
const MAXD = 128u;
const MAXBK = 32u;
const ROWS = 64u;         // rows owned by one workgroup (its size)
const NEG_BIG = -3.0e38;  // finite stand-in for -inf: no infinities in this shader

struct Dims {
  T: u32,
  N: u32,
  NKV: u32,
  D: u32,
  q0: u32,
  scale: f32,
}

var<workgroup> tileA: array<f32, BK * HD>;
var<workgroup> tileB: array<f32, BK * HD>;
var<workgroup> tileL: array<f32, BK>;
var<workgroup> tileDi: array<f32, BK>;

// ---- forward -----------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> fOut: array<f32>;
@group(0) @binding(1) var<storage, read_write> fLse: array<f32>;
@group(0) @binding(2) var<storage, read> fQ: array<f32>;
@group(0) @binding(3) var<storage, read> fK: array<f32>;
@group(0) @binding(4) var<storage, read> fV: array<f32>;
@group(0) @binding(5) var<uniform> fDims: Dims;

// Workgroup (block of ROWS query rows, head n); the keys a row at position p sees are 0..p.
@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let T = fDims.T;
  let N = fDims.N;
  let D = fDims.D;
  let q0 = fDims.q0;
  let n = wg.y;
  let m = n / (N / fDims.NKV);
  let kvStride = fDims.NKV * D;
  let i0 = wg.x * ROWS;
  let t = i0 + li;
  let live = t < T;
  let keyEnd = q0 + min(i0 + ROWS, T);  // one past the last key any row of the block sees

  var q: array<f32, MAXD>;
  var acc: array<f32, MAXD>;
  if (live) {
    for (var d = 0u; d < D; d++) {
      q[d] = fQ[(t * N + n) * D + d];
      acc[d] = 0.0;
    }
  }
  var mx = NEG_BIG;
  var l = 0.0;
  var s: array<f32, MAXBK>;
  for (var j0 = 0u; j0 < keyEnd; j0 += BK) {
    let cnt = min(BK, keyEnd - j0);
    workgroupBarrier();
    for (var e = li; e < cnt * D; e += ROWS) {
      let g = (j0 + e / D) * kvStride + m * D + e % D;
      tileA[e] = fK[g];
      tileB[e] = fV[g];
    }
    workgroupBarrier();
    var lim = 0u;
    if (live && q0 + t + 1u > j0) {
      lim = min(cnt, q0 + t + 1u - j0);
    }
    if (lim > 0u) {
      var tmax = mx;
      for (var r = 0u; r < lim; r++) {
        var dot = 0.0;
        for (var d = 0u; d < D; d++) {
          dot += q[d] * tileA[r * D + d];
        }
        s[r] = dot * fDims.scale;
        tmax = max(tmax, s[r]);
      }
      let corr = exp(mx - tmax);
      l *= corr;
      for (var d = 0u; d < D; d++) {
        acc[d] *= corr;
      }
      for (var r = 0u; r < lim; r++) {
        let p = exp(s[r] - tmax);
        l += p;
        for (var d = 0u; d < D; d++) {
          acc[d] += p * tileB[r * D + d];
        }
      }
      mx = tmax;
    }
  }
  if (live) {
    let inv = 1.0 / l;
    for (var d = 0u; d < D; d++) {
      fOut[(t * N + n) * D + d] = acc[d] * inv;
    }
    fLse[n * T + t] = mx + log(l);
  }
}

// ---- backward: Di = dout_i . out_i -------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> dDi: array<f32>;
@group(0) @binding(1) var<storage, read_write> dDout: array<f32>;
@group(0) @binding(2) var<storage, read> dOut: array<f32>;
@group(0) @binding(3) var<uniform> dDims: Dims;

// One invocation per (row t, head n); the flat index is spread over a 2-D grid of workgroups.
@compute @workgroup_size(64)
fn attention_backward_di(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
  let tn = (wg.y * nwg.x + wg.x) * ROWS + li;
  let N = dDims.N;
  let D = dDims.D;
  if (tn >= dDims.T * N) {
    return;
  }
  var di = 0.0;
  for (var d = 0u; d < D; d++) {
    di += dDout[tn * D + d] * dOut[tn * D + d];
  }
  dDi[(tn % N) * dDims.T + tn / N] = di;
}

// ---- backward: dq ------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> qDq: array<f32>;
@group(0) @binding(1) var<storage, read_write> qDout: array<f32>;
@group(0) @binding(2) var<storage, read> qQ: array<f32>;
@group(0) @binding(3) var<storage, read> qK: array<f32>;
@group(0) @binding(4) var<storage, read> qV: array<f32>;
@group(0) @binding(5) var<storage, read> qLse: array<f32>;
@group(0) @binding(6) var<storage, read> qDi: array<f32>;
@group(0) @binding(7) var<uniform> qDims: Dims;

// dq_i = scale * sum_j p_ij (dout_i . v_j - Di) k_j; workgroup (block of query rows, head n).
@compute @workgroup_size(64)
fn attention_backward_dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let T = qDims.T;
  let N = qDims.N;
  let D = qDims.D;
  let scale = qDims.scale;
  let n = wg.y;
  let m = n / (N / qDims.NKV);
  let kvStride = qDims.NKV * D;
  let i0 = wg.x * ROWS;
  let t = i0 + li;
  let live = t < T;
  let keyEnd = min(i0 + ROWS, T);

  var q: array<f32, MAXD>;
  var g: array<f32, MAXD>;
  var dq: array<f32, MAXD>;
  var di = 0.0;
  var lse = 0.0;
  if (live) {
    let row = (t * N + n) * D;
    for (var d = 0u; d < D; d++) {
      q[d] = qQ[row + d];
      g[d] = qDout[row + d];
      dq[d] = 0.0;
    }
    di = qDi[n * T + t];
    lse = qLse[n * T + t];
  }
  for (var j0 = 0u; j0 < keyEnd; j0 += BK) {
    let cnt = min(BK, keyEnd - j0);
    workgroupBarrier();
    for (var e = li; e < cnt * D; e += ROWS) {
      let gi = (j0 + e / D) * kvStride + m * D + e % D;
      tileA[e] = qK[gi];
      tileB[e] = qV[gi];
    }
    workgroupBarrier();
    var lim = 0u;
    if (live && t + 1u > j0) {
      lim = min(cnt, t + 1u - j0);
    }
    for (var r = 0u; r < lim; r++) {
      var sc = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < D; d++) {
        sc += q[d] * tileA[r * D + d];
        dp += g[d] * tileB[r * D + d];
      }
      let p = exp(sc * scale - lse);
      let ds = p * (dp - di) * scale;
      for (var d = 0u; d < D; d++) {
        dq[d] += ds * tileA[r * D + d];
      }
    }
  }
  if (live) {
    for (var d = 0u; d < D; d++) {
      qDq[(t * N + n) * D + d] = dq[d];
    }
  }
}

// ---- backward: dk, dv --------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> kDk: array<f32>;
@group(0) @binding(1) var<storage, read_write> kDv: array<f32>;
@group(0) @binding(2) var<storage, read> kDout: array<f32>;
@group(0) @binding(3) var<storage, read> kQ: array<f32>;
@group(0) @binding(4) var<storage, read> kK: array<f32>;
@group(0) @binding(5) var<storage, read> kV: array<f32>;
@group(0) @binding(6) var<storage, read> kLse: array<f32>;
@group(0) @binding(7) var<storage, read> kDi: array<f32>;
@group(0) @binding(8) var<uniform> kDims: Dims;

// dv_j = sum_n sum_{i>=j} p_ij dout_i; dk_j = scale * sum_n sum_{i>=j} p_ij (dp_ij - Di) q_i;
// workgroup (block of key rows, kv head m); query rows stream through the tiles, head by head.
@compute @workgroup_size(64)
fn attention_backward_dkdv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let T = kDims.T;
  let N = kDims.N;
  let NKV = kDims.NKV;
  let D = kDims.D;
  let scale = kDims.scale;
  let m = wg.y;
  let group = N / NKV;
  let j0 = wg.x * ROWS;
  let j = j0 + li;
  let live = j < T;

  var k: array<f32, MAXD>;
  var v: array<f32, MAXD>;
  var dk: array<f32, MAXD>;
  var dv: array<f32, MAXD>;
  if (live) {
    let row = (j * NKV + m) * D;
    for (var d = 0u; d < D; d++) {
      k[d] = kK[row + d];
      v[d] = kV[row + d];
      dk[d] = 0.0;
      dv[d] = 0.0;
    }
  }
  for (var n = m * group; n < (m + 1u) * group; n++) {
    for (var i0 = j0; i0 < T; i0 += BK) {
      let cnt = min(BK, T - i0);
      workgroupBarrier();
      for (var e = li; e < cnt * D; e += ROWS) {
        let gi = ((i0 + e / D) * N + n) * D + e % D;
        tileA[e] = kQ[gi];
        tileB[e] = kDout[gi];
      }
      for (var r = li; r < cnt; r += ROWS) {
        tileL[r] = kLse[n * T + i0 + r];
        tileDi[r] = kDi[n * T + i0 + r];
      }
      workgroupBarrier();
      if (live) {
        // query rows i0 + r >= j only (causal)
        var r = 0u;
        if (j > i0) {
          r = j - i0;
        }
        for (; r < cnt; r++) {
          var sc = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < D; d++) {
            sc += tileA[r * D + d] * k[d];
            dp += tileB[r * D + d] * v[d];
          }
          let p = exp(sc * scale - tileL[r]);
          let ds = p * (dp - tileDi[r]) * scale;
          for (var d = 0u; d < D; d++) {
            dv[d] += p * tileB[r * D + d];
            dk[d] += ds * tileA[r * D + d];
          }
        }
      }
    }
  }
  if (live) {
    let row = (j * NKV + m) * D;
    for (var d = 0u; d < D; d++) {
      kDk[row + d] = dk[d];
      kDv[row + d] = dv[d];
    }
  }
}
