// Causal grouped-query attention (native/cpu/attention.cc) and its backward, flash-style: each query
// row keeps a running max and sum over the keys it sees, so no T x T score matrix exists.
// q [T, N, D] at positions q0..q0+T-1; k/v [q0+T, NKV, D]; out [T, N, D]; lse [N, T]. The backward
// (q0 = 0) first stores Di = dout_i . out_i per (head, row) in di [N, T], then writes dq [T, N, D] and
// dk/dv [T, NKV, D] (summed over the query heads of each group), recomputing the probabilities from lse.
// One invocation owns one row (a query row in the forward and for dq, a key row for dk/dv) with its
// vectors in private vec4 arrays, so D <= 4 * MAXD4. Every invocation of a workgroup walks the same
// keys (or queries) in the same order, rows masking what causality hides: loop counters and the
// addresses of the shared operand stay uniform, which GPUs serve as broadcasts and CPU rasterizers
// (llvmpipe) as scalar loads.
// Bindings 0 and 1 are read_write in every entry (one bind group layout serves the whole file), the
// rest read-only.
requires unrestricted_pointer_parameters;

override HD: u32 = 128u;           // head dim D
override HD4: u32 = (HD + 3u) / 4u; // vec4s per row
const MAXD4 = 32u;
override ROWS: u32 = 64u;           // rows per workgroup (its size); fewer for short inputs
const KB = 16u;                     // keys scored before the running sums are rescaled
const NEG_BIG = -3.0e38;            // finite stand-in for -inf: no infinities in this shader

struct Dims {
  T: u32,
  N: u32,
  NKV: u32,
  D: u32,
  q0: u32,
  scale: f32,
}

// Elements d..d+3 of a row starting at element i of the buffer (i = row start + d); zeros past D.
fn ld4(p: ptr<storage, array<f32>, read>, i: u32, d: u32) -> vec4<f32> {
  if (d + 4u <= HD) {
    return vec4<f32>((*p)[i], (*p)[i + 1u], (*p)[i + 2u], (*p)[i + 3u]);
  }
  var r = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    if (d + c < HD) {
      r[c] = (*p)[i + c];
    }
  }
  return r;
}

fn ld4rw(p: ptr<storage, array<f32>, read_write>, i: u32, d: u32) -> vec4<f32> {
  if (d + 4u <= HD) {
    return vec4<f32>((*p)[i], (*p)[i + 1u], (*p)[i + 2u], (*p)[i + 3u]);
  }
  var r = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    if (d + c < HD) {
      r[c] = (*p)[i + c];
    }
  }
  return r;
}

fn st4(p: ptr<storage, array<f32>, read_write>, i: u32, d: u32, x: vec4<f32>) {
  for (var c = 0u; c < 4u; c++) {
    if (d + c < HD) {
      (*p)[i + c] = x[c];
    }
  }
}

fn hsum(v: vec4<f32>) -> f32 {
  return (v.x + v.y) + (v.z + v.w);
}

// ---- forward -----------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> fOut: array<f32>;
@group(0) @binding(1) var<storage, read_write> fLse: array<f32>;
@group(0) @binding(2) var<storage, read> fQ: array<f32>;
@group(0) @binding(3) var<storage, read> fK: array<f32>;
@group(0) @binding(4) var<storage, read> fV: array<f32>;
@group(0) @binding(5) var<uniform> fDims: Dims;

// Workgroup (block of ROWS query rows, head n); the row at position p sees keys 0..p.
@compute @workgroup_size(ROWS)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let T = fDims.T;
  let N = fDims.N;
  let n = wg.y;
  let m = n / (N / fDims.NKV);
  let kvStride = fDims.NKV * HD;
  let i0 = wg.x * ROWS;
  let live = i0 + li < T;
  let t = min(i0 + li, T - 1u);              // rows past T shadow the last row and write nothing
  let keyEnd = fDims.q0 + min(i0 + ROWS, T); // one past the last key any row of the block sees
  let last = fDims.q0 + t;                   // the last key this row sees

  var q: array<vec4<f32>, MAXD4>;
  var acc: array<vec4<f32>, MAXD4>;
  let qRow = (t * N + n) * HD;
  for (var d = 0u; d < HD4; d++) {
    q[d] = ld4(&fQ, qRow + 4u * d, 4u * d);
    acc[d] = vec4<f32>(0.0);
  }
  var mx = NEG_BIG;
  var l = 0.0;
  var s: array<f32, KB>;
  for (var j0 = 0u; j0 < keyEnd; j0 += KB) {
    let cnt = min(KB, keyEnd - j0);
    var tmax = mx;
    for (var r = 0u; r < cnt; r++) {
      let kRow = (j0 + r) * kvStride + m * HD;
      var dot = vec4<f32>(0.0);
      for (var d = 0u; d < HD4; d++) {
        dot += q[d] * ld4(&fK, kRow + 4u * d, 4u * d);
      }
      s[r] = select(NEG_BIG, hsum(dot) * fDims.scale, j0 + r <= last);
      tmax = max(tmax, s[r]);
    }
    let corr = exp(mx - tmax);
    l *= corr;
    for (var d = 0u; d < HD4; d++) {
      acc[d] *= corr;
    }
    for (var r = 0u; r < cnt; r++) {
      let p = select(0.0, exp(s[r] - tmax), j0 + r <= last);
      l += p;
      let vRow = (j0 + r) * kvStride + m * HD;
      for (var d = 0u; d < HD4; d++) {
        acc[d] += p * ld4(&fV, vRow + 4u * d, 4u * d);
      }
    }
    mx = tmax;
  }
  if (live) {
    let inv = 1.0 / l;
    for (var d = 0u; d < HD4; d++) {
      st4(&fOut, qRow + 4u * d, 4u * d, acc[d] * inv);
    }
    fLse[n * T + t] = mx + log(l);
  }
}

// ---- forward for a few rows against many keys (decoding) ----------------------------------------
// Same bindings as the forward. Workgroup (row t, head n): its 64 invocations split the keys, each
// keeping its own running max, sum and output row, merged at the end; so one row's work is spread
// instead of one invocation walking the whole KV cache.
const SPLIT = 64u;
var<workgroup> redS: array<f32, SPLIT>;
var<workgroup> red4: array<vec4<f32>, SPLIT>;

@compute @workgroup_size(64)
fn attention_decode(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let T = fDims.T;
  let N = fDims.N;
  let t = wg.x;
  let n = wg.y;
  let m = n / (N / fDims.NKV);
  let kvStride = fDims.NKV * HD;
  let last = fDims.q0 + t;

  var q: array<vec4<f32>, MAXD4>;
  var acc: array<vec4<f32>, MAXD4>;
  let qRow = (t * N + n) * HD;
  for (var d = 0u; d < HD4; d++) {
    q[d] = ld4(&fQ, qRow + 4u * d, 4u * d);
    acc[d] = vec4<f32>(0.0);
  }
  var mx = NEG_BIG;
  var l = 0.0;
  for (var j = li; j <= last; j += SPLIT) {
    let kRow = j * kvStride + m * HD;
    var dot = vec4<f32>(0.0);
    for (var d = 0u; d < HD4; d++) {
      dot += q[d] * ld4(&fK, kRow + 4u * d, 4u * d);
    }
    let sc = hsum(dot) * fDims.scale;
    let mNew = max(mx, sc);
    let corr = exp(mx - mNew);
    let p = exp(sc - mNew);
    l = l * corr + p;
    for (var d = 0u; d < HD4; d++) {
      acc[d] = acc[d] * corr + p * ld4(&fV, kRow + 4u * d, 4u * d);
    }
    mx = mNew;
  }

  // Merge: M = max of the maxima, each invocation's share scaled by exp(mx - M).
  redS[li] = mx;
  workgroupBarrier();
  for (var st = SPLIT / 2u; st > 0u; st >>= 1u) {
    if (li < st) {
      redS[li] = max(redS[li], redS[li + st]);
    }
    workgroupBarrier();
  }
  let M = redS[0];
  workgroupBarrier();
  let f = exp(mx - M);  // 0 for invocations that saw no key
  redS[li] = l * f;
  workgroupBarrier();
  for (var st = SPLIT / 2u; st > 0u; st >>= 1u) {
    if (li < st) {
      redS[li] += redS[li + st];
    }
    workgroupBarrier();
  }
  let L = redS[0];
  for (var d = 0u; d < HD4; d++) {
    red4[li] = acc[d] * f;
    workgroupBarrier();
    for (var st = SPLIT / 2u; st > 0u; st >>= 1u) {
      if (li < st) {
        red4[li] += red4[li + st];
      }
      workgroupBarrier();
    }
    if (li == 0u) {
      st4(&fOut, qRow + 4u * d, 4u * d, red4[0] / L);
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    fLse[n * T + t] = M + log(L);
  }
}

// ---- backward: Di = dout_i . out_i -------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> dDi: array<f32>;
@group(0) @binding(1) var<storage, read_write> dDout: array<f32>;
@group(0) @binding(2) var<storage, read> dOut: array<f32>;
@group(0) @binding(3) var<uniform> dDims: Dims;

// One invocation per (row t, head n); the flat index is spread over a 2-D grid of workgroups.
@compute @workgroup_size(ROWS)
fn attention_backward_di(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
  let tn = (wg.y * nwg.x + wg.x) * ROWS + li;
  let N = dDims.N;
  if (tn >= dDims.T * N) {
    return;
  }
  var di = 0.0;
  for (var d = 0u; d < HD; d++) {
    di += dDout[tn * HD + d] * dOut[tn * HD + d];
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

// dq_i = scale * sum_{j<=i} p_ij (dout_i . v_j - Di) k_j; workgroup (block of query rows, head n).
@compute @workgroup_size(ROWS)
fn attention_backward_dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let T = qDims.T;
  let N = qDims.N;
  let scale = qDims.scale;
  let n = wg.y;
  let m = n / (N / qDims.NKV);
  let kvStride = qDims.NKV * HD;
  let i0 = wg.x * ROWS;
  let live = i0 + li < T;
  let t = min(i0 + li, T - 1u);
  let keyEnd = min(i0 + ROWS, T);

  var q: array<vec4<f32>, MAXD4>;
  var g: array<vec4<f32>, MAXD4>;
  var dq: array<vec4<f32>, MAXD4>;
  let row = (t * N + n) * HD;
  for (var d = 0u; d < HD4; d++) {
    q[d] = ld4(&qQ, row + 4u * d, 4u * d);
    g[d] = ld4rw(&qDout, row + 4u * d, 4u * d);
    dq[d] = vec4<f32>(0.0);
  }
  let di = qDi[n * T + t];
  let lse = qLse[n * T + t];
  for (var j = 0u; j < keyEnd; j++) {
    let kRow = j * kvStride + m * HD;
    var sc = vec4<f32>(0.0);
    var dp = vec4<f32>(0.0);
    for (var d = 0u; d < HD4; d++) {
      sc += q[d] * ld4(&qK, kRow + 4u * d, 4u * d);
      dp += g[d] * ld4(&qV, kRow + 4u * d, 4u * d);
    }
    let p = select(0.0, exp(hsum(sc) * scale - lse), j <= t);
    let ds = p * (hsum(dp) - di) * scale;
    for (var d = 0u; d < HD4; d++) {
      dq[d] += ds * ld4(&qK, kRow + 4u * d, 4u * d);
    }
  }
  if (live) {
    for (var d = 0u; d < HD4; d++) {
      st4(&qDq, row + 4u * d, 4u * d, dq[d]);
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
// workgroup (block of key rows, kv head m); the query rows of each head of the group stream past.
@compute @workgroup_size(ROWS)
fn attention_backward_dkdv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let T = kDims.T;
  let N = kDims.N;
  let NKV = kDims.NKV;
  let scale = kDims.scale;
  let m = wg.y;
  let group = N / NKV;
  let j0 = wg.x * ROWS;
  let live = j0 + li < T;
  let j = min(j0 + li, T - 1u);

  var k: array<vec4<f32>, MAXD4>;
  var v: array<vec4<f32>, MAXD4>;
  var dk: array<vec4<f32>, MAXD4>;
  var dv: array<vec4<f32>, MAXD4>;
  let row = (j * NKV + m) * HD;
  for (var d = 0u; d < HD4; d++) {
    k[d] = ld4(&kK, row + 4u * d, 4u * d);
    v[d] = ld4(&kV, row + 4u * d, 4u * d);
    dk[d] = vec4<f32>(0.0);
    dv[d] = vec4<f32>(0.0);
  }
  for (var n = m * group; n < (m + 1u) * group; n++) {
    for (var i = j0; i < T; i++) {
      let qRow = (i * N + n) * HD;
      var sc = vec4<f32>(0.0);
      var dp = vec4<f32>(0.0);
      for (var d = 0u; d < HD4; d++) {
        sc += ld4(&kQ, qRow + 4u * d, 4u * d) * k[d];
        dp += ld4(&kDout, qRow + 4u * d, 4u * d) * v[d];
      }
      let p = select(0.0, exp(hsum(sc) * scale - kLse[n * T + i]), i >= j);
      let ds = p * (hsum(dp) - kDi[n * T + i]) * scale;
      for (var d = 0u; d < HD4; d++) {
        dv[d] += p * ld4(&kDout, qRow + 4u * d, 4u * d);
        dk[d] += ds * ld4(&kQ, qRow + 4u * d, 4u * d);
      }
    }
  }
  if (live) {
    for (var d = 0u; d < HD4; d++) {
      st4(&kDk, row + 4u * d, 4u * d, dk[d]);
      st4(&kDv, row + 4u * d, 4u * d, dv[d]);
    }
  }
}
