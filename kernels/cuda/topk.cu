// Top-K per row (descending, ties to the lower index), one block per row. Each thread keeps the best
// element of its strided slice that ranks below the last one selected; a round picks the block-wide
// best of those, and only the thread that owned it rescans its slice. So a row costs one pass over V
// plus K short rescans, and nothing of size V is written.
#include "cuda/common.cuh"
#include "cuda/ops.h"
#include "engine/errors.h"

namespace claas::cuda {

namespace {

constexpr int kThreads = 256;

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
  topk_kernel<<<R, kThreads, 0, s>>>(idx_RK, val_RK, x_RV, V, K);
  CLAAS_LAUNCHED();
}

}  // namespace claas::cuda
