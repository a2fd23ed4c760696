// Top-K per row, descending, ties broken by the lower index (native/cpu/topk.cc). One workgroup per
// row: a radix select over order-preserving 32-bit keys (4 passes of 8-bit histograms) finds the K-th
// largest key, counting only keys at or above a floor, the K-th largest of the invocations' own
// maxima (K distinct elements reach it, so the answer does too; it spares most histogram atomics).
// The keys above the K-th and the lowest-indexed keys equal to it are gathered, then each
// candidate's place is its count of better candidates. K <= MAXK.

const WG = 256u;
const MAXK = 1024u;

struct Dims {
  R: u32,
  V: u32,
  K: u32,
}

@group(0) @binding(0) var<storage, read_write> outIdx: array<i32>;
@group(0) @binding(1) var<storage, read_write> outVal: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> tieBase: array<u32, WG>;
var<workgroup> candIdx: array<u32, MAXK>;
var<workgroup> candVal: array<f32, MAXK>;
var<workgroup> candKey: array<u32, MAXK>;
var<workgroup> selected: vec2<u32>;  // (key prefix so far, how many still to take at that prefix)
var<workgroup> aboveCount: atomic<u32>;
var<workgroup> laneMax: array<u32, WG>;
var<workgroup> floorKey: u32;

// Larger float -> larger key; -0 and +0 map to the same key (they compare equal on the CPU).
fn orderKey(f: f32) -> u32 {
  var u = bitcast<u32>(f);
  if ((u & 0x7fffffffu) == 0u) {
    u = 0u;
  }
  return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

@compute @workgroup_size(256)
fn topk(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= dims.R) {
    return;
  }
  let V = dims.V;
  let K = dims.K;
  let base = row * V;

  var lmax = 0u;  // the smallest key: lanes without elements never raise the floor
  for (var v = li; v < V; v += WG) {
    lmax = max(lmax, orderKey(x[base + v]));
  }
  laneMax[li] = lmax;
  if (li == 0u) {
    floorKey = 0u;
  }
  workgroupBarrier();
  if (K <= WG) {
    // Ranks of the maxima are a permutation (ties by lane); the lane ranked K-1 holds the floor.
    var rank = 0u;
    for (var o = 0u; o < WG; o++) {
      let m = laneMax[o];
      if (m > lmax || (m == lmax && o < li)) {
        rank++;
      }
    }
    if (rank == K - 1u) {
      floorKey = lmax;
    }
  }
  let floor = workgroupUniformLoad(&floorKey);

  var prefix = 0u;
  var mask = 0u;
  var remaining = K;
  for (var round = 0u; round < 4u; round++) {
    let shift = 24u - 8u * round;
    atomicStore(&hist[li], 0u);
    workgroupBarrier();
    for (var v = li; v < V; v += WG) {
      let key = orderKey(x[base + v]);
      if (key >= floor && (key & mask) == prefix) {
        atomicAdd(&hist[(key >> shift) & 255u], 1u);
      }
    }
    workgroupBarrier();
    if (li == 0u) {
      // The digit whose bucket holds the remaining-th largest key, counting from the top.
      var rem = remaining;
      var b = 255u;
      loop {
        let c = atomicLoad(&hist[b]);
        if (c >= rem || b == 0u) {
          break;
        }
        rem -= c;
        b -= 1u;
      }
      selected = vec2<u32>(prefix | (b << shift), rem);
    }
    let sel = workgroupUniformLoad(&selected);
    prefix = sel.x;
    remaining = sel.y;
    mask |= 255u << shift;
  }
  let kth = prefix;
  let ties = remaining;  // keys equal to kth to take, lowest indices first
  let nAbove = K - ties;

  // Contiguous chunks keep index order across invocations, so ties are ranked by a prefix sum.
  let chunk = (V + WG - 1u) / WG;
  let lo = min(li * chunk, V);
  let hi = min(lo + chunk, V);
  var eq = 0u;
  for (var v = lo; v < hi; v++) {
    if (orderKey(x[base + v]) == kth) {
      eq++;
    }
  }
  tieBase[li] = eq;
  if (li == 0u) {
    atomicStore(&aboveCount, 0u);
  }
  workgroupBarrier();
  if (li == 0u) {
    var run = 0u;
    for (var i = 0u; i < WG; i++) {
      let c = tieBase[i];
      tieBase[i] = run;
      run += c;
    }
  }
  workgroupBarrier();
  var rank = tieBase[li];
  for (var v = lo; v < hi; v++) {
    let f = x[base + v];
    let key = orderKey(f);
    if (key > kth) {
      let slot = atomicAdd(&aboveCount, 1u);
      candIdx[slot] = v;
      candVal[slot] = f;
    } else if (key == kth) {
      if (rank < ties) {
        candIdx[nAbove + rank] = v;
        candVal[nAbove + rank] = f;
      }
      rank++;
    }
  }
  workgroupBarrier();
  for (var c = li; c < K; c += WG) {
    candKey[c] = orderKey(candVal[c]);
  }
  workgroupBarrier();
  for (var c = li; c < K; c += WG) {
    let kc = candKey[c];
    let ic = candIdx[c];
    var place = 0u;
    for (var o = 0u; o < K; o++) {
      let ko = candKey[o];
      if (ko > kc || (ko == kc && candIdx[o] < ic)) {
        place++;
      }
    }
    outIdx[row * K + place] = i32(ic);
    outVal[row * K + place] = candVal[c];
  }
}
