// Causal grouped-query attention, flash-style: keys and values stream through shared memory in tiles
// of 32 rows; each warp owns one query row with an online softmax (running max and sum), so no T x T
// score matrix ever exists. The backward recomputes probabilities from the saved log-sum-exp:
// one kernel for dQ (a warp per query row, over key tiles) and one for dK / dV (a warp per key row,
// over query tiles of every query head in the kv group), so no atomics are needed.
// Lane j of a warp scores key (or query) j of the tile; lane d-slices (d = lane + 32c) hold output rows.
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/ops.h"
#include "engine/errors.h"

namespace claas::cuda {

namespace {

constexpr int kTile = 32;  // keys (or queries) per shared-memory tile = lanes per warp
constexpr int kWarps = 8;  // query (or key) rows per block

// Shared rows are padded by one float so that lane j reading row j, column d hits bank (j + d) % 32.
__device__ inline float dot_row(const float* a, const float* b, int D) {
  float s = 0.0f;
  for (int d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}

// Copies rows [r0, r0 + n) of a [rows, stride] matrix (D used columns) into sh[kTile][D + 1], zero-filling the rest.
__device__ inline void load_tile(float* sh, const float* src, size_t stride, int r0, int n, int D) {
  for (int i = threadIdx.x; i < kTile * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    sh[r * (D + 1) + d] = r < n ? src[static_cast<size_t>(r0 + r) * stride + d] : 0.0f;
  }
}

template <int C>
__global__ void attention_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v, int T,
                                         int N, int NKV, int D, int q0, float scale) {
  extern __shared__ float sh[];
  float* Ks = sh;
  float* Vs = Ks + kTile * (D + 1);
  float* Qs = Vs + kTile * (D + 1);  // [kWarps][D + 1]
  const int n = blockIdx.y, m = n / (N / NKV);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i0 = blockIdx.x * kWarps, i = i0 + warp;  // this warp's query row
  const bool active = i < T;
  const int lastRow = min(i0 + kWarps, T) - 1;
  const size_t qStride = static_cast<size_t>(N) * D, kvStride = static_cast<size_t>(NKV) * D;
  float* Qw = Qs + warp * (D + 1);
  if (active) {
    for (int d = lane; d < D; d += 32) Qw[d] = q[i * qStride + static_cast<size_t>(n) * D + d] * scale;
  }
  float mx = -INFINITY, sum = 0.0f, acc[C];
#pragma unroll
  for (int c = 0; c < C; ++c) acc[c] = 0.0f;
  const int keys = q0 + lastRow + 1, pos = q0 + i;
  for (int j0 = 0; j0 < keys; j0 += kTile) {
    const int nk = min(kTile, keys - j0);
    __syncthreads();
    load_tile(Ks, k + static_cast<size_t>(m) * D, kvStride, j0, nk, D);
    load_tile(Vs, v + static_cast<size_t>(m) * D, kvStride, j0, nk, D);
    __syncthreads();
    if (!active || j0 > pos) continue;
    const int j = j0 + lane;
    const float sc = j <= pos ? dot_row(Qw, Ks + lane * (D + 1), D) : -INFINITY;
    const float mNew = fmaxf(mx, warp_max(sc));
    const float p = expf(sc - mNew), corr = expf(mx - mNew);
    sum = sum * corr + warp_sum(p);
#pragma unroll
    for (int c = 0; c < C; ++c) acc[c] *= corr;
    for (int jj = 0; jj < nk && j0 + jj <= pos; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const int d = lane + 32 * c;
        if (d < D) acc[c] += pj * Vs[jj * (D + 1) + d];
      }
    }
    mx = mNew;
  }
  if (!active) return;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int d = lane + 32 * c;
    if (d < D) out[i * qStride + static_cast<size_t>(n) * D + d] = acc[c] / sum;
  }
  if (lane == 0) lse[static_cast<size_t>(n) * T + i] = mx + logf(sum);
}

// delta[n, i] = dot(dO_i, O_i) for head n.
__global__ void attention_delta_kernel(float* delta, const float* dout, const float* out, int T, int N, int D) {
  const int row = blockIdx.x * kWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= T * N) return;
  const int i = row / N, n = row % N;
  const float* a = dout + static_cast<size_t>(row) * D;
  const float* b = out + static_cast<size_t>(row) * D;
  float s = 0.0f;
  for (int d = lane; d < D; d += 32) s += a[d] * b[d];
  s = warp_sum(s);
  if (lane == 0) delta[static_cast<size_t>(n) * T + i] = s;
}

template <int C>
__global__ void attention_dq_kernel(float* dq, const float* dout, const float* q, const float* k, const float* v,
                                    const float* lse, const float* delta, int T, int N, int NKV, int D, float scale) {
  extern __shared__ float sh[];
  float* Ks = sh;
  float* Vs = Ks + kTile * (D + 1);
  float* Qs = Vs + kTile * (D + 1);
  float* Gs = Qs + kWarps * (D + 1);
  const int n = blockIdx.y, m = n / (N / NKV);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i0 = blockIdx.x * kWarps, i = i0 + warp;
  const bool active = i < T;
  const int lastRow = min(i0 + kWarps, T) - 1;
  const size_t qStride = static_cast<size_t>(N) * D, kvStride = static_cast<size_t>(NKV) * D;
  float* Qw = Qs + warp * (D + 1);
  float* Gw = Gs + warp * (D + 1);
  float rowLse = 0.0f, rowDelta = 0.0f;
  if (active) {
    for (int d = lane; d < D; d += 32) {
      Qw[d] = q[i * qStride + static_cast<size_t>(n) * D + d] * scale;
      Gw[d] = dout[i * qStride + static_cast<size_t>(n) * D + d];
    }
    rowLse = lse[static_cast<size_t>(n) * T + i];
    rowDelta = delta[static_cast<size_t>(n) * T + i];
  }
  float acc[C];
#pragma unroll
  for (int c = 0; c < C; ++c) acc[c] = 0.0f;
  for (int j0 = 0; j0 <= lastRow; j0 += kTile) {
    const int nk = min(kTile, lastRow + 1 - j0);
    __syncthreads();
    load_tile(Ks, k + static_cast<size_t>(m) * D, kvStride, j0, nk, D);
    load_tile(Vs, v + static_cast<size_t>(m) * D, kvStride, j0, nk, D);
    __syncthreads();
    if (!active || j0 > i) continue;
    const int j = j0 + lane;
    float ds = 0.0f;
    if (j <= i) {
      const float p = expf(dot_row(Qw, Ks + lane * (D + 1), D) - rowLse);
      ds = p * (dot_row(Gw, Vs + lane * (D + 1), D) - rowDelta) * scale;
    }
    for (int jj = 0; jj < nk && j0 + jj <= i; ++jj) {
      const float dsj = __shfl_sync(0xffffffffu, ds, jj);
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const int d = lane + 32 * c;
        if (d < D) acc[c] += dsj * Ks[jj * (D + 1) + d];
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int d = lane + 32 * c;
    if (d < D) dq[i * qStride + static_cast<size_t>(n) * D + d] = acc[c];
  }
}

template <int C>
__global__ void attention_dkv_kernel(float* dk, float* dv, const float* dout, const float* q, const float* k,
                                     const float* v, const float* lse, const float* delta, int T, int N, int NKV, int D,
                                     float scale) {
  extern __shared__ float sh[];
  float* Qs = sh;                       // [kTile][D + 1] queries of the tile, pre-scaled
  float* Gs = Qs + kTile * (D + 1);     // [kTile][D + 1] their output gradients
  float* Ks = Gs + kTile * (D + 1);     // [kWarps][D + 1] this block's key rows
  float* Vs = Ks + kWarps * (D + 1);
  float* Ls = Vs + kWarps * (D + 1);    // [kTile] lse of the tile's queries
  float* Ds = Ls + kTile;               // [kTile] delta of the tile's queries
  const int m = blockIdx.y, group = N / NKV;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int j0 = blockIdx.x * kWarps, j = j0 + warp;  // this warp's key row
  const bool active = j < T;
  const size_t qStride = static_cast<size_t>(N) * D, kvStride = static_cast<size_t>(NKV) * D;
  float* Kw = Ks + warp * (D + 1);
  float* Vw = Vs + warp * (D + 1);
  if (active) {
    for (int d = lane; d < D; d += 32) {
      Kw[d] = k[j * kvStride + static_cast<size_t>(m) * D + d];
      Vw[d] = v[j * kvStride + static_cast<size_t>(m) * D + d];
    }
  }
  float ak[C], av[C];
#pragma unroll
  for (int c = 0; c < C; ++c) ak[c] = av[c] = 0.0f;
  for (int n = m * group; n < (m + 1) * group; ++n) {
    for (int i0 = j0; i0 < T; i0 += kTile) {  // queries before j0 never see these keys
      const int nq = min(kTile, T - i0);
      __syncthreads();
      for (int x = threadIdx.x; x < kTile * D; x += blockDim.x) {
        const int r = x / D, d = x % D;
        const size_t src = static_cast<size_t>(i0 + r) * qStride + static_cast<size_t>(n) * D + d;
        Qs[r * (D + 1) + d] = r < nq ? q[src] * scale : 0.0f;
        Gs[r * (D + 1) + d] = r < nq ? dout[src] : 0.0f;
      }
      for (int r = threadIdx.x; r < kTile; r += blockDim.x) {
        Ls[r] = r < nq ? lse[static_cast<size_t>(n) * T + i0 + r] : 0.0f;
        Ds[r] = r < nq ? delta[static_cast<size_t>(n) * T + i0 + r] : 0.0f;
      }
      __syncthreads();
      if (!active) continue;
      const int i = i0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (lane < nq && i >= j) {
        p = expf(dot_row(Qs + lane * (D + 1), Kw, D) - Ls[lane]);
        ds = p * (dot_row(Gs + lane * (D + 1), Vw, D) - Ds[lane]);  // the scale is already in Qs
      }
      for (int ii = 0; ii < nq; ++ii) {
        const float pi = __shfl_sync(0xffffffffu, p, ii), dsi = __shfl_sync(0xffffffffu, ds, ii);
#pragma unroll
        for (int c = 0; c < C; ++c) {
          const int d = lane + 32 * c;
          if (d < D) {
            av[c] += pi * Gs[ii * (D + 1) + d];
            ak[c] += dsi * Qs[ii * (D + 1) + d];
          }
        }
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int d = lane + 32 * c;
    if (d < D) {
      dk[j * kvStride + static_cast<size_t>(m) * D + d] = ak[c];
      dv[j * kvStride + static_cast<size_t>(m) * D + d] = av[c];
    }
  }
}

void check_shape(int N, int NKV, int D) {
  if (D > 256) throw EngineError("E_CONFIG", "the CUDA attention kernels support head dimensions up to 256");
  if (NKV <= 0 || N % NKV != 0) throw EngineError("E_CONFIG", "heads must be a multiple of kv heads");
}

// Runs kernel<C> with C = ceil(D / 32) rounded up to a power of two (1, 2, 4 or 8).
template <template <int> class Launch, typename... Args>
void dispatch(int D, Args... args) {
  if (D <= 32) Launch<1>::run(args...);
  else if (D <= 64) Launch<2>::run(args...);
  else if (D <= 128) Launch<4>::run(args...);
  else Launch<8>::run(args...);
}

template <typename Kernel>
void allow_shared(Kernel k, size_t bytes) {
  if (bytes > 48 * 1024) CLAAS_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int C>
struct ForwardLaunch {
  static void run(cudaStream_t s, float* out, float* lse, const float* q, const float* k, const float* v, int T, int N,
                  int NKV, int D, int q0) {
    const size_t bytes = sizeof(float) * (2 * kTile + kWarps) * (D + 1);
    allow_shared(attention_forward_kernel<C>, bytes);
    const dim3 grid((T + kWarps - 1) / kWarps, N);
    attention_forward_kernel<C><<<grid, 32 * kWarps, bytes, s>>>(out, lse, q, k, v, T, N, NKV, D, q0,
                                                                 1.0f / sqrtf(static_cast<float>(D)));
    CLAAS_LAUNCHED();
  }
};

template <int C>
struct BackwardLaunch {
  static void run(cudaStream_t s, float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                  const float* v, const float* lse, const float* delta, int T, int N, int NKV, int D) {
    const float scale = 1.0f / sqrtf(static_cast<float>(D));
    const size_t dqBytes = sizeof(float) * (2 * kTile + 2 * kWarps) * (D + 1);
    allow_shared(attention_dq_kernel<C>, dqBytes);
    attention_dq_kernel<C><<<dim3((T + kWarps - 1) / kWarps, N), 32 * kWarps, dqBytes, s>>>(dq, dout, q, k, v, lse,
                                                                                            delta, T, N, NKV, D, scale);
    CLAAS_LAUNCHED();
    const size_t kvBytes = sizeof(float) * ((2 * kTile + 2 * kWarps) * (D + 1) + 2 * kTile);
    allow_shared(attention_dkv_kernel<C>, kvBytes);
    attention_dkv_kernel<C><<<dim3((T + kWarps - 1) / kWarps, NKV), 32 * kWarps, kvBytes, s>>>(
        dk, dv, dout, q, k, v, lse, delta, T, N, NKV, D, scale);
    CLAAS_LAUNCHED();
  }
};

}  // namespace

void attention(cudaStream_t s, float* out_TND, float* lse_NT, const float* q_TND, const float* k_TMD,
               const float* v_TMD, int T, int N, int NKV, int D, int q0) {
  check_shape(N, NKV, D);
  if (T == 0) return;
  dispatch<ForwardLaunch>(D, s, out_TND, lse_NT, q_TND, k_TMD, v_TMD, T, N, NKV, D, q0);
}

void attention_backward(cudaStream_t s, float* dq_TND, float* dk_TMD, float* dv_TMD, const float* dout_TND,
                        const float* q_TND, const float* k_TMD, const float* v_TMD, const float* out_TND,
                        const float* lse_NT, int T, int N, int NKV, int D, float* scratch) {
  check_shape(N, NKV, D);
  if (T == 0) return;
  attention_delta_kernel<<<(T * N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(scratch, dout_TND, out_TND, T, N, D);
  CLAAS_LAUNCHED();
  dispatch<BackwardLaunch>(D, s, dq_TND, dk_TMD, dv_TMD, dout_TND, q_TND, k_TMD, v_TMD, lse_NT,
                           static_cast<const float*>(scratch), T, N, NKV, D);
}

}  // namespace claas::cuda
