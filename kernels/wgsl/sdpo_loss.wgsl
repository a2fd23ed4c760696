// The per-position SDPO objective over R rows at once (native/cpu/sdpo_loss.cc, docs sdpo.md): the
// divergence D on the teacher's top-K (tail bucket or renormalized) or the sampled-token form, the
// importance weight w and the k3 KL-to-base term; ds[r, :] = coef * d(w*D + beta*k3)/ds, zeros
// where no gradient. One workgroup per row; the categories (K or K+1 <= MAXC) live in workgroup memory.
// Inputs: s [R, V] student log-probabilities, y [R], teacher ids/logp [R, K], rowIn [4, R] planes
// (teacher tail logp, teacher token logp, old logp (NaN = unknown), base logp); coef is one number.
// Outputs: ds [R, V], vals [R, 4] = (D, w, k3, clipped 0/1). Arithmetic is f32 (the CPU uses double).

const WG = 256u;
const MAXC = 1025u;
const TAIL_FLOOR = 1e-12;
const MARK = 1.0;  // marks top-K entries of the zeroed ds row while the tail is summed

struct Opts {
  R: u32,
  V: u32,
  K: u32,
  tail: u32,
  sampledToken: u32,
  alpha: f32,
  isClip: f32,
  beta: f32,
  coef: f32,
}

@group(0) @binding(0) var<storage, read_write> ds: array<f32>;
@group(0) @binding(1) var<storage, read_write> vals: array<f32>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read> ys: array<i32>;
@group(0) @binding(4) var<storage, read> tIdx: array<i32>;
@group(0) @binding(5) var<storage, read> tLogp: array<f32>;
@group(0) @binding(6) var<storage, read> rowIn: array<f32>;
@group(0) @binding(7) var<uniform> opt: Opts;

var<workgroup> red: array<f32, WG>;
var<workgroup> redC: array<vec2<f32>, WG>;
var<workgroup> logP: array<f32, MAXC>;
var<workgroup> logQ: array<f32, MAXC>;
var<workgroup> grad: array<f32, MAXC>;

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
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    if (li < st) {
      red[li] = max(red[li], red[li + st]);
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
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    if (li < st) {
      red[li] += red[li + st];
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

// Bit tests: WGSL lets compilers assume floats are never NaN or infinite.
fn isNan(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn isFinite(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

fn logaddexp(a: f32, b: f32) -> f32 {
  let m = max(a, b);
  return m + log(exp(a - m) + exp(b - m));
}

// exp(r) - 1 without the cancellation near 0 (k3 and its gradient are tiny there).
fn expm1(r: f32) -> f32 {
  if (abs(r) < 1e-2) {
    return r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0))));
  }
  return exp(r) - 1.0;
}

// exp(r) - 1 - r, likewise.
fn k3(r: f32) -> f32 {
  if (abs(r) < 1e-2) {
    return r * r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0))));
  }
  return exp(r) - 1.0 - r;
}

@compute @workgroup_size(256)
fn sdpo_loss(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
  let R = opt.R;
  let row = wg.y * nwg.x + wg.x;
  if (row >= R) {
    return;
  }
  let V = opt.V;
  let K = opt.K;
  let base = row * V;
  let y = u32(ys[row]);
  let sy = s[base + y];
  let tailLogp = rowIn[row];
  let tokenLogp = rowIn[R + row];
  let oldLogp = rowIn[2u * R + row];
  let baseLogp = rowIn[3u * R + row];
  let coef = opt.coef;

  for (var v = li; v < V; v += WG) {
    ds[base + v] = 0.0;
  }

  var w = 1.0;
  var clipped = 0.0;
  if (!isNan(oldLogp)) {
    let ratio = exp(clamp(sy - oldLogp, -20.0, 20.0));
    clipped = select(0.0, 1.0, ratio > opt.isClip);
    w = min(ratio, opt.isClip);
  }

  var D = 0.0;
  var dy = 0.0;  // added to ds[y] by invocation 0 after the top-K scatter
  var qTail = 0.0;
  var tailClamped = false;
  if (opt.sampledToken != 0u) {
    let adv = sy - tokenLogp;
    D = adv * sy;
    dy = coef * w * adv;
  } else {
    let C = select(K, K + 1u, opt.tail != 0u);
    for (var k = li; k < K; k += WG) {
      logP[k] = tLogp[row * K + k];
      logQ[k] = s[base + u32(tIdx[row * K + k])];
    }
    if (opt.tail != 0u) {
      // The student's tail is summed outside the top-K (not 1 - sum) to avoid cancellation.
      storageBarrier();
      for (var k = li; k < K; k += WG) {
        let id = u32(tIdx[row * K + k]);
        if (id < V) {
          ds[base + id] = MARK;
        }
      }
      storageBarrier();
      var part = vec2<f32>(0.0, 0.0);
      for (var v = li; v < V; v += WG) {
        if (ds[base + v] != MARK) {
          part = twoSum(part, exp(s[base + v]));
        }
      }
      qTail = reduceSumC(part, li);
      tailClamped = qTail < TAIL_FLOOR;
      if (tailClamped) {
        qTail = TAIL_FLOOR;
      }
      if (li == 0u) {
        logQ[K] = log(qTail);
        var tp = log(TAIL_FLOOR);
        if (isFinite(tailLogp)) {
          tp = max(tailLogp, tp);
        }
        logP[K] = tp;
      }
    } else {
      workgroupBarrier();
      var mp = -3.0e38;
      var mq = -3.0e38;
      for (var k = li; k < K; k += WG) {
        mp = max(mp, logP[k]);
        mq = max(mq, logQ[k]);
      }
      mp = reduceMax(mp, li);
      mq = reduceMax(mq, li);
      var sp = 0.0;
      var sq = 0.0;
      for (var k = li; k < K; k += WG) {
        sp += exp(logP[k] - mp);
        sq += exp(logQ[k] - mq);
      }
      let lseP = mp + log(reduceSum(sp, li));
      let lseQ = mq + log(reduceSum(sq, li));
      for (var k = li; k < K; k += WG) {
        logP[k] -= lseP;
        logQ[k] -= lseQ;
      }
    }
    workgroupBarrier();

    let a = opt.alpha;
    var part = 0.0;
    for (var c = li; c < C; c += WG) {
      let lp = logP[c];
      let lq = logQ[c];
      let P = exp(lp);
      let Q = exp(lq);
      if (a == 0.0) {
        part += P * (lp - lq);
        grad[c] = -P;
      } else if (a == 1.0) {
        part += Q * (lq - lp);
        grad[c] = Q * (lq - lp + 1.0);
      } else {
        let logM = logaddexp(log(a) + lp, log(1.0 - a) + lq);
        part += a * P * (lp - logM) + (1.0 - a) * Q * (lq - logM);
        grad[c] = (1.0 - a) * Q * (lq - logM);
      }
    }
    D = reduceSum(part, li);

    // Each top-K entry's gradient, carried through the tail / renormalization map, into logP.
    let scale = coef * w;
    if (opt.tail != 0u) {
      let gTail = select(grad[K], 0.0, tailClamped);
      for (var k = li; k < K; k += WG) {
        logP[k] = scale * (grad[k] - gTail * exp(logQ[k]) / qTail);
      }
    } else {
      var gs = 0.0;
      for (var k = li; k < K; k += WG) {
        gs += grad[k];
      }
      let gSum = reduceSum(gs, li);
      for (var k = li; k < K; k += WG) {
        logP[k] = scale * (grad[k] - exp(logQ[k]) * gSum);
      }
    }
  }
  // The zeroed row and the gradients in logP are complete before the scatter reads them.
  storageBarrier();
  workgroupBarrier();

  // One invocation scatters, in the CPU's order, so repeated ids accumulate like its +=.
  if (li == 0u) {
    if (opt.sampledToken == 0u) {
      if (opt.tail != 0u) {
        for (var k = 0u; k < K; k++) {
          let id = u32(tIdx[row * K + k]);
          if (id < V) {
            ds[base + id] = 0.0;
          }
        }
      }
      for (var k = 0u; k < K; k++) {
        let id = u32(tIdx[row * K + k]);
        if (id < V) {
          ds[base + id] += logP[k];
        }
      }
    }
    if (y < V) {
      ds[base + y] += dy;
    }
    let rRaw = sy - baseLogp;
    let r = clamp(rRaw, -20.0, 20.0);
    if (opt.beta != 0.0 && rRaw >= -20.0 && rRaw <= 20.0 && y < V) {
      ds[base + y] += coef * opt.beta * expm1(r);
    }
    vals[row * 4u] = D;
    vals[row * 4u + 1u] = w;
    vals[row * 4u + 2u] = k3(r);
    vals[row * 4u + 3u] = clipped;
  }
}
