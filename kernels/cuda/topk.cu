// Top-K per row (descending, ties to the lower index), one block of 1024 threads per row.
//
// Values are mapped to unsigned keys whose integer order is the float order (-0 first folded onto +0,
// so that they tie as they do under float comparison on the CPU). A radix select over the key finds
// the K-th largest key `thr` in four passes over the row (8 bits a pass, a 256-bin shared histogram
// of the keys that still match the chosen prefix), and how many elements equal to `thr` belong in the
// top K (`need`). One more pass compacts the survivors: every key above `thr` (exactly K - need of
// them, in any order) and the first `need` keys equal to `thr` in index order, which is the CPU's
// tie rule (when all the equal keys are taken, their order does not matter and this pass streams
// too; otherwise it goes a block-wide tile at a time to rank them). A bitonic sort of the at most 1024
// survivors by (key desc, index asc) gives the order. Every streaming pass reads the row with all
// threads and several loads in flight, so a 151936-wide row costs five reads instead of the K serial
// rounds of the previous kernel (kept below for K > 1024).
#include <climits>

#include "cuda/common.cuh"
#include "cuda/ops.h"
#include "engine/errors.h"

namespace claas::cuda {

namespace {

constexpr int kThreads = 256;         // serial-round kernel (K > kMaxSortK)
constexpr int kSelectThreads = 1024;  // radix-select kernel
constexpr int kMaxSortK = 1024;       // survivors sorted in shared memory, one slot a thread
constexpr int kUnroll = 8;            // loads in flight per thread in the streaming passes

__device__ inline uint32_t order_key(float f) {
  uint32_t u = __float_as_uint(f);
  if (u == 0x80000000u) u = 0;  // -0 == +0 as floats: same key, so the index decides as on the CPU
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Calls f(v, key, valid) kUnroll times per thread per step with kUnroll independent loads in flight.
// The trip count is the same in every thread (elements past V come with valid = false), so f may use
// full-warp intrinsics.
template <typename F>
__device__ inline void for_each_key(const float* x, int V, F f) {
  const int nt = blockDim.x;
  for (int base = 0; base < V; base += kUnroll * nt) {
    float val[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int v = base + u * nt + threadIdx.x;
      val[u] = v < V ? x[v] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int v = base + u * nt + threadIdx.x;
      f(v, order_key(val[u]), v < V);
    }
  }
}

__global__ void __launch_bounds__(kSelectThreads) topk_select_kernel(int32_t* idx, float* val, const float* x_RV,
                                                                     int V, int K) {
  __shared__ uint32_t hist[256];
  __shared__ uint32_t selDigit, selRank, selCount;
  __shared__ uint32_t gtCount;
  __shared__ uint32_t warpEq[kSelectThreads / 32];
  __shared__ uint32_t keys[kMaxSortK];
  __shared__ int32_t ids[kMaxSortK];
  const float* x = x_RV + static_cast<size_t>(blockIdx.x) * V;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;

  // Radix select: after the pass at `shift`, the top (32 - shift) bits of thr are known, and
  // `remaining` is the rank of thr among the keys sharing them (1 = the largest).
  uint32_t prefix = 0, mask = 0, remaining = static_cast<uint32_t>(K);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    // Log-probs crowd into a few bins (the first pass sees little more than their exponents), so the
    // lanes of a warp that share a bin add once, through their lowest lane.
    for_each_key(x, V, [&](int, uint32_t key, bool valid) {
      const uint32_t bin = valid && (key & mask) == prefix ? (key >> shift) & 0xffu : 256u;
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (bin < 256u && __ffs(peers) - 1 == lane) atomicAdd(&hist[bin], static_cast<uint32_t>(__popc(peers)));
    });
    __syncthreads();
    if (warp == 0) {
      // Lane l owns bins 8l .. 8l+7; `incl` counts the keys in bins >= 8l (a suffix scan).
      uint32_t c[8], own = 0;
#pragma unroll
      for (int b = 0; b < 8; ++b) own += (c[b] = hist[lane * 8 + b]);
      uint32_t incl = own;
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_down_sync(0xffffffffu, incl, o);
        if (lane + o < 32) incl += y;
      }
      const uint32_t above = incl - own;  // keys in higher lanes' bins
      if (above < remaining && remaining <= incl) {
        uint32_t acc = above;
        for (int b = 7; b >= 0; --b) {
          if (acc + c[b] >= remaining) {
            selDigit = static_cast<uint32_t>(lane * 8 + b);
            selRank = remaining - acc;
            selCount = c[b];
            break;
          }
          acc += c[b];
        }
      }
    }
    __syncthreads();
    prefix |= selDigit << shift;
    mask |= 0xffu << shift;
    remaining = selRank;
    // hist is cleared and selDigit rewritten only after the next pass's first __syncthreads.
  }
  const uint32_t thr = prefix, need = remaining, nGreater = static_cast<uint32_t>(K) - need;
  const uint32_t equal = selCount;  // keys == thr in the row (the last pass's bin)

  if (tid == 0) gtCount = 0;
  __syncthreads();
  if (equal == need) {
    // Every key >= thr survives (exactly K of them), so their order of arrival does not matter and
    // the pass can stream like the histogram passes. The usual case: ties at the K-th value are rare.
    for_each_key(x, V, [&](int v, uint32_t key, bool valid) {
      if (valid && key >= thr) {
        const uint32_t slot = atomicAdd(&gtCount, 1u);
        keys[slot] = key;
        ids[slot] = v;
      }
    });
  } else {
    // Compaction in index order, a block-wide tile at a time (the equal keys need their index rank).
    uint32_t eqSeen = 0;  // equal keys in earlier tiles (the same in every thread)
    for (int base = 0; base < V; base += blockDim.x) {
      const int v = base + tid;
      const uint32_t key = v < V ? order_key(x[v]) : 0u;
      const bool gt = v < V && key > thr, eq = v < V && key == thr;
      if (gt) {
        const uint32_t slot = atomicAdd(&gtCount, 1u);
        keys[slot] = key;
        ids[slot] = v;
      }
      const uint32_t ballot = __ballot_sync(0xffffffffu, eq);
      if (lane == 0) warpEq[warp] = __popc(ballot);
      __syncthreads();
      uint32_t before = eqSeen, total = 0;
      for (int w = 0; w < warps; ++w) {
        if (w < warp) before += warpEq[w];
        total += warpEq[w];
      }
      const uint32_t rank = before + __popc(ballot & ((1u << lane) - 1u));
      if (eq && rank < need) {
        keys[nGreater + rank] = key;
        ids[nGreater + rank] = v;
      }
      eqSeen += total;
      const bool done = eqSeen >= need && gtCount == nGreater;  // this tile's atomics all precede the sync above
      __syncthreads();  // warpEq is rewritten (and gtCount added to) by the next tile only after this
      if (done) break;
    }
  }

  // Bitonic sort of the survivors, padded to a power of two with entries that rank last.
  int P = 1;
  while (P < K) P <<= 1;
  for (int i = K + tid; i < P; i += blockDim.x) {
    keys[i] = 0u;
    ids[i] = INT_MAX;
  }
  __syncthreads();
  for (int k = 2; k <= P; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = tid; i < P; i += blockDim.x) {
        const int l = i ^ j;
        if (l > i) {
          const uint32_t ki = keys[i], kl = keys[l];
          const int32_t ii = ids[i], il = ids[l];
          const bool iFirst = ki > kl || (ki == kl && ii < il);
          if (iFirst != ((i & k) == 0)) {  // rank order in the lower half of each k-block, reversed in the upper
            keys[i] = kl;
            keys[l] = ki;
            ids[i] = il;
            ids[l] = ii;
          }
        }
      }
      __syncthreads();
    }
  }
  for (int t = tid; t < K; t += blockDim.x) {
    const int32_t id = ids[t];
    idx[static_cast<size_t>(blockIdx.x) * K + t] = id;
    val[static_cast<size_t>(blockIdx.x) * K + t] = x[id];  // the stored value, -0 included
  }
}

// The previous kernel, kept for K > kMaxSortK: each thread keeps the best element of its strided slice
// below the last one selected; a round picks the block-wide best, and only its owner rescans.
struct Cand {
  float v;
  int i;  // -1: none
};

// a ranks above b: larger value, then lower index; "none" ranks below everything.
__device__ inline bool above(Cand a, Cand b) {
  if (a.i < 0) return false;
  if (b.i < 0) return true;
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

__device__ inline Cand warp_best(Cand c) {
  for (int o = 16; o > 0; o >>= 1) {
    Cand other{__shfl_xor_sync(0xffffffffu, c.v, o), __shfl_xor_sync(0xffffffffu, c.i, o)};
    if (above(other, c)) c = other;
  }
  return c;
}

// The best element of this thread's slice ranking strictly below `limit` (none: no limit).
__device__ inline Cand slice_best(const float* x, int V, Cand limit) {
  Cand best{0.0f, -1};
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const Cand c{x[v], v};
    if (limit.i >= 0 && !above(limit, c)) continue;
    if (above(c, best)) best = c;
  }
  return best;
}

__global__ void topk_kernel(int32_t* idx, float* val, const float* x_RV, int V, int K) {
  __shared__ Cand partial[kThreads / 32];
  __shared__ Cand chosen;
  const float* x = x_RV + static_cast<size_t>(blockIdx.x) * V;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Cand mine = slice_best(x, V, Cand{0.0f, -1});
  for (int k = 0; k < K; ++k) {
    Cand c = warp_best(mine);
    if (lane == 0) partial[warp] = c;
    __syncthreads();
    if (warp == 0) {
      c = lane < kThreads / 32 ? partial[lane] : Cand{0.0f, -1};
      c = warp_best(c);
      if (lane == 0) {
        chosen = c;
        idx[static_cast<size_t>(blockIdx.x) * K + k] = c.i;
        val[static_cast<size_t>(blockIdx.x) * K + k] = c.v;
      }
    }
    __syncthreads();
    const Cand sel = chosen;
    if (sel.i >= 0 && sel.i % static_cast<int>(blockDim.x) == static_cast<int>(threadIdx.x)) mine = slice_best(x, V, sel);
    __syncthreads();  // chosen and partial are rewritten next round
  }
}

}  // namespace

void topk(cudaStream_t s, int32_t* idx_RK, float* val_RK, const float* x_RV, int R, int V, int K) {
  if (K < 1 || K > V) throw EngineError("E_INPUT", "top-k must be in [1, vocab]");
  if (R == 0) return;
  if (K <= kMaxSortK) {
    topk_select_kernel<<<R, kSelectThreads, 0, s>>>(idx_RK, val_RK, x_RV, V, K);
  } else {
    topk_kernel<<<R, kThreads, 0, s>>>(idx_RK, val_RK, x_RV, V, K);
  }
  CLAAS_LAUNCHED();
}

}  // namespace claas::cuda
