// Causal grouped-query attention, flash-style. Head dims up to 128 run on tensor cores (the TF32 WMMA
// kernels further down); larger ones on the fp32 kernels that follow, where keys and values stream
// through shared memory in tiles of 32 rows; each warp owns one query row with an online softmax (running max and sum), so no T x T
// score matrix ever exists. The backward recomputes probabilities from the saved log-sum-exp:
// one kernel for dQ (a warp per query row, over key tiles) and one for dK / dV (a warp per key row,
// over query tiles of every query head in the kv group), so no atomics are needed.
// Lane j of a warp scores key (or query) j of the tile; lane d-slices (d = lane + 32c) hold output rows.
#include <mma.h>

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

// ---- Tensor-core kernels (head dim up to 128). -----------------------------------------------------
// Same flash structure, but the products run as 16x16x8 TF32 WMMA tiles with fp32 accumulation:
// a block of 8 warps holds 64 query rows (forward, dQ) or 64 key rows (dK / dV) of one head in shared
// memory and streams the other side through in tiles of 32 rows. Each product tile is stored to
// shared memory, where the softmax / masking / gradient elementwise work runs on plain threads with
// explicit (row, column) indices, so no code relies on the opaque fragment layout. TF32 (10-bit
// mantissa, round to nearest) rather than bf16 keeps the products' inputs 4x closer to fp32; these
// products are a small part of the step's FLOPs, so the precision costs no visible time.
// Head dims are zero-padded to DP = 32 * FR columns; every row index is bounds-checked on load and
// every output on store, so T need not be a multiple of a tile.
namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;  // B = X^T
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

constexpr int kTcThreads = 256;  // 8 warps
constexpr int kTcRows = 64;      // rows a block keeps (queries, or keys for dK / dV)
constexpr int kTcTile = 32;      // rows of the streamed side per step
constexpr int kTcLS = kTcTile + 4;  // row stride of the 64 x 32 product tiles (a multiple of 4 floats, as WMMA needs)

template <typename Frag>
__device__ inline void load_tf32(Frag& f, const float* p, unsigned ld) {
  wmma::load_matrix_sync(f, p, ld);
#pragma unroll
  for (int t = 0; t < f.num_elements; ++t) f.x[t] = wmma::__float_to_tf32(f.x[t]);
}

// rows x DP tile from a [*, stride] matrix at column offset col0 (D used columns), rows r < n valid,
// scaled; everything else zero. Fully unrolled so each thread has all its loads in flight.
template <int ROWS, int DP>
__device__ inline void load_rows(float* sh, int ld, const float* src, size_t stride, int r0, int n, int D,
                                 float scale = 1.0f) {
  static_assert((ROWS * DP) % kTcThreads == 0, "tile must split evenly over the block");
#pragma unroll
  for (int t = 0; t < ROWS * DP / kTcThreads; ++t) {
    const int e = threadIdx.x + t * kTcThreads, r = e / DP, d = e - r * DP;
    sh[r * ld + d] = r < n && d < D ? src[static_cast<size_t>(r0 + r) * stride + d] * scale : 0.0f;
  }
}

// C[16 x 16] (+)= A[16 x 8K] * B^T where B is stored row-major [16][8K] (so B^T is col-major).
template <int KSTEPS>
__device__ inline void mma_abt(FragC& c, const float* a, int lda, const float* b, int ldb) {
#pragma unroll 4  // fully unrolled, the compiler hoists all the fragment loads and spills at D = 128
  for (int kk = 0; kk < KSTEPS; ++kk) {
    FragA fa;
    FragBt fb;
    load_tf32(fa, a + kk * 8, lda);
    load_tf32(fb, b + kk * 8, ldb);
    wmma::mma_sync(c, fa, fb, c);
  }
}

// C[16 x 16] += A[16 x 32] * B[32 x 16], both row-major.
__device__ inline void mma_ab32(FragC& c, const float* a, int lda, const float* b, int ldb) {
#pragma unroll
  for (int kk = 0; kk < kTcTile / 8; ++kk) {
    FragA fa;
    FragB fb;
    load_tf32(fa, a + kk * 8, lda);
    load_tf32(fb, b + kk * 8 * ldb, ldb);
    wmma::mma_sync(c, fa, fb, c);
  }
}

// Shared floats: two 64-row and two 32-row tiles of LD = DP + 4 columns, `products` 64 x 32 product
// tiles and 3 per-row vectors. (The forward's 111 KB at D = 128 lets two blocks share an H100 / H200 SM.)
template <int FR>
constexpr size_t tc_shared_bytes(int products) {
  return sizeof(float) * (static_cast<size_t>(2 * kTcRows + 2 * kTcTile) * (32 * FR + 4) +
                          static_cast<size_t>(products) * kTcRows * kTcLS + 3 * kTcRows);
}

template <int FR>
__global__ void __launch_bounds__(kTcThreads) attention_forward_tc_kernel(float* out, float* lse, const float* q,
                                                                          const float* k, const float* v, int T,
                                                                          int N, int NKV, int D, int q0, float scale) {
  constexpr int DP = 32 * FR, LD = DP + 4;
  extern __shared__ __align__(128) float tcsh[];
  float* Qs = tcsh;                    // [64][LD] queries, pre-scaled
  float* Os = Qs + kTcRows * LD;       // [64][LD] unnormalized output
  float* Ks = Os + kTcRows * LD;       // [32][LD]
  float* Vs = Ks + kTcTile * LD;       // [32][LD]
  float* Ss = Vs + kTcTile * LD;       // [64][kTcLS] scores, then probabilities
  float* rowM = Ss + kTcRows * kTcLS;  // running max
  float* rowL = rowM + kTcRows;        // running sum
  float* rowC = rowL + kTcRows;        // this step's rescale factor
  const int n = blockIdx.y, m = n / (N / NKV);
  const int tid = threadIdx.x, warp = tid >> 5;
  const int i0 = blockIdx.x * kTcRows, rows = min(kTcRows, T - i0);
  const size_t qStride = static_cast<size_t>(N) * D, kvStride = static_cast<size_t>(NKV) * D;
  load_rows<kTcRows, DP>(Qs, LD, q + static_cast<size_t>(n) * D, qStride, i0, rows, D, scale);
  for (int e = tid; e < kTcRows * DP; e += kTcThreads) Os[(e / DP) * LD + e % DP] = 0.0f;
  if (tid < kTcRows) {
    rowM[tid] = -INFINITY;
    rowL[tid] = 0.0f;
  }
  const int keys = q0 + i0 + rows;  // keys visible to the block's last row
  const int rb = warp >> 1;         // this warp's 16-row block of the 64 rows
  for (int j0 = 0; j0 < keys; j0 += kTcTile) {
    __syncthreads();  // the previous step is done with Ks, Vs and Ss
    load_rows<kTcTile, DP>(Ks, LD, k + static_cast<size_t>(m) * D, kvStride, j0, keys - j0, D);
    load_rows<kTcTile, DP>(Vs, LD, v + static_cast<size_t>(m) * D, kvStride, j0, keys - j0, D);
    __syncthreads();
    {  // S = Q K^T: warp -> (row block rb, key block warp & 1)
      FragC s;
      wmma::fill_fragment(s, 0.0f);
      mma_abt<DP / 8>(s, Qs + rb * 16 * LD, LD, Ks + (warp & 1) * 16 * LD, LD);
      wmma::store_matrix_sync(Ss + rb * 16 * kTcLS + (warp & 1) * 16, s, kTcLS, wmma::mem_row_major);
    }
    __syncthreads();
    {  // online softmax: 4 threads a row (adjacent lanes), 8 columns each
      const int r = tid >> 2, part = tid & 3, pos = q0 + i0 + r;
      const float mOld = rowM[r];
      float sc[8], mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const int j = j0 + part * 8 + c;
        sc[c] = j <= pos && j < keys ? Ss[r * kTcLS + part * 8 + c] : -INFINITY;
        mx = fmaxf(mx, sc[c]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // Finite: key 0 is in the first step and visible to every row, so mOld is finite after it.
      const float mNew = fmaxf(mOld, mx);
      float sum = 0.0f;
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const float p = expf(sc[c] - mNew);  // 0 for masked keys
        Ss[r * kTcLS + part * 8 + c] = p;
        sum += p;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float corr = expf(mOld - mNew);  // 0 on the first step (mOld = -inf)
      __syncwarp();  // every lane of the row has read rowM[r] before it is rewritten
      if (part == 0) {
        rowM[r] = mNew;
        rowL[r] = rowL[r] * corr + sum;
        rowC[r] = corr;
      }
    }
    __syncthreads();
    for (int e = tid; e < kTcRows * DP; e += kTcThreads) Os[(e / DP) * LD + e % DP] *= rowC[e / DP];
    __syncthreads();
#pragma unroll
    for (int f = 0; f < FR; ++f) {  // O += P V: warp -> (row block rb, FR of the 2 FR column blocks)
      float* o = Os + rb * 16 * LD + ((warp & 1) * FR + f) * 16;
      FragC acc;
      wmma::load_matrix_sync(acc, o, LD, wmma::mem_row_major);
      mma_ab32(acc, Ss + rb * 16 * kTcLS, kTcLS, Vs + ((warp & 1) * FR + f) * 16, LD);
      wmma::store_matrix_sync(o, acc, LD, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int e = tid; e < kTcRows * DP; e += kTcThreads) {
    const int r = e / DP, d = e % DP;
    if (r < rows && d < D) out[static_cast<size_t>(i0 + r) * qStride + static_cast<size_t>(n) * D + d] = Os[r * LD + d] / rowL[r];
  }
  if (tid < rows) lse[static_cast<size_t>(n) * T + i0 + tid] = rowM[tid] + logf(rowL[tid]);
}

// dQ for 64 query rows of head n: over key tiles up to the last row, P = exp(S - lse),
// dS = P (dO V^T - delta) * scale, dQ += dS K (accumulated in the warps' fragments).
template <int FR>
__global__ void __launch_bounds__(kTcThreads) attention_dq_tc_kernel(float* dq, const float* dout, const float* q,
                                                                     const float* k, const float* v, const float* lse,
                                                                     const float* delta, int T, int N, int NKV, int D,
                                                                     float scale) {
  constexpr int DP = 32 * FR, LD = DP + 4;
  extern __shared__ __align__(128) float tcsh[];
  float* Qs = tcsh;                  // [64][LD] queries, pre-scaled; dQ at the end
  float* Gs = Qs + kTcRows * LD;     // [64][LD] output gradients
  float* Ks = Gs + kTcRows * LD;     // [32][LD]
  float* Vs = Ks + kTcTile * LD;     // [32][LD]
  float* Ss = Vs + kTcTile * LD;     // [64][kTcLS] scores
  float* Ps = Ss + kTcRows * kTcLS;  // [64][kTcLS] dO V^T, then dS
  float* rowLse = Ps + kTcRows * kTcLS;
  float* rowDelta = rowLse + kTcRows;
  const int n = blockIdx.y, m = n / (N / NKV);
  const int tid = threadIdx.x, warp = tid >> 5, rb = warp >> 1;
  const int i0 = blockIdx.x * kTcRows, rows = min(kTcRows, T - i0), last = i0 + rows - 1;
  const size_t qStride = static_cast<size_t>(N) * D, kvStride = static_cast<size_t>(NKV) * D;
  load_rows<kTcRows, DP>(Qs, LD, q + static_cast<size_t>(n) * D, qStride, i0, rows, D, scale);
  load_rows<kTcRows, DP>(Gs, LD, dout + static_cast<size_t>(n) * D, qStride, i0, rows, D);
  if (tid < kTcRows) {
    rowLse[tid] = tid < rows ? lse[static_cast<size_t>(n) * T + i0 + tid] : 0.0f;
    rowDelta[tid] = tid < rows ? delta[static_cast<size_t>(n) * T + i0 + tid] : 0.0f;
  }
  FragC acc[FR];
#pragma unroll
  for (int f = 0; f < FR; ++f) wmma::fill_fragment(acc[f], 0.0f);
  for (int j0 = 0; j0 <= last; j0 += kTcTile) {
    __syncthreads();
    load_rows<kTcTile, DP>(Ks, LD, k + static_cast<size_t>(m) * D, kvStride, j0, last + 1 - j0, D);
    load_rows<kTcTile, DP>(Vs, LD, v + static_cast<size_t>(m) * D, kvStride, j0, last + 1 - j0, D);
    __syncthreads();
    {
      FragC s, dp;
      wmma::fill_fragment(s, 0.0f);
      wmma::fill_fragment(dp, 0.0f);
      mma_abt<DP / 8>(s, Qs + rb * 16 * LD, LD, Ks + (warp & 1) * 16 * LD, LD);
      mma_abt<DP / 8>(dp, Gs + rb * 16 * LD, LD, Vs + (warp & 1) * 16 * LD, LD);
      wmma::store_matrix_sync(Ss + rb * 16 * kTcLS + (warp & 1) * 16, s, kTcLS, wmma::mem_row_major);
      wmma::store_matrix_sync(Ps + rb * 16 * kTcLS + (warp & 1) * 16, dp, kTcLS, wmma::mem_row_major);
    }
    __syncthreads();
    for (int e = tid; e < kTcRows * kTcTile; e += kTcThreads) {
      const int r = e / kTcTile, c = e % kTcTile, i = i0 + r, j = j0 + c;
      float ds = 0.0f;
      if (r < rows && j <= i) {
        const float p = expf(Ss[r * kTcLS + c] - rowLse[r]);
        ds = p * (Ps[r * kTcLS + c] - rowDelta[r]) * scale;
      }
      Ps[r * kTcLS + c] = ds;
    }
    __syncthreads();
#pragma unroll
    for (int f = 0; f < FR; ++f) mma_ab32(acc[f], Ps + rb * 16 * kTcLS, kTcLS, Ks + ((warp & 1) * FR + f) * 16, LD);
  }
  __syncthreads();  // every warp is done with Qs before it holds dQ
#pragma unroll
  for (int f = 0; f < FR; ++f)
    wmma::store_matrix_sync(Qs + rb * 16 * LD + ((warp & 1) * FR + f) * 16, acc[f], LD, wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kTcRows * DP; e += kTcThreads) {
    const int r = e / DP, d = e % DP;
    if (r < rows && d < D) dq[static_cast<size_t>(i0 + r) * qStride + static_cast<size_t>(n) * D + d] = Qs[r * LD + d];
  }
}

// dK, dV for 64 key rows of kv head m: over every query head of the group and every query tile at or
// after the block's first key, P^T = exp(K Q^T - lse), dS^T = P^T (V dO^T - delta);
// dV += P^T dO, dK += dS^T Q (Q pre-scaled, so dK carries the scale). No atomics: each block owns its keys.
// perHead: blockIdx.y is one query head n instead of a kv head, and the block writes that head's share
// to dk / dv laid out [N][T][D] (summed over the group afterwards, in a fixed order). The causal
// triangle makes the first key blocks the longest; splitting the group's heads over blocks divides
// that critical path by the group size (4 for Qwen3-8B) and fills the SMs.
template <int FR>
__global__ void __launch_bounds__(kTcThreads) attention_dkv_tc_kernel(float* dk, float* dv, const float* dout,
                                                                      const float* q, const float* k, const float* v,
                                                                      const float* lse, const float* delta, int T,
                                                                      int N, int NKV, int D, float scale,
                                                                      bool perHead) {
  constexpr int DP = 32 * FR, LD = DP + 4;
  extern __shared__ __align__(128) float tcsh[];
  float* Ks = tcsh;                  // [64][LD]; dK at the end
  float* Vs = Ks + kTcRows * LD;     // [64][LD]; dV at the end
  float* Qs = Vs + kTcRows * LD;     // [32][LD] queries of the tile, pre-scaled
  float* Gs = Qs + kTcTile * LD;     // [32][LD] their output gradients
  float* St = Gs + kTcTile * LD;     // [64 keys][kTcLS] scores^T, then P^T
  float* Dt = St + kTcRows * kTcLS;  // [64 keys][kTcLS] V dO^T, then dS^T
  float* colLse = Dt + kTcRows * kTcLS;
  float* colDelta = colLse + kTcTile;
  const int group = N / NKV, m = perHead ? blockIdx.y / group : blockIdx.y;
  const int nFirst = perHead ? blockIdx.y : m * group, nEnd = perHead ? nFirst + 1 : nFirst + group;
  const int tid = threadIdx.x, warp = tid >> 5, kb = warp >> 1;
  const int j0 = blockIdx.x * kTcRows, nk = min(kTcRows, T - j0);
  const size_t qStride = static_cast<size_t>(N) * D, kvStride = static_cast<size_t>(NKV) * D;
  load_rows<kTcRows, DP>(Ks, LD, k + static_cast<size_t>(m) * D, kvStride, j0, nk, D);
  load_rows<kTcRows, DP>(Vs, LD, v + static_cast<size_t>(m) * D, kvStride, j0, nk, D);
  FragC accK[FR], accV[FR];
#pragma unroll
  for (int f = 0; f < FR; ++f) {
    wmma::fill_fragment(accK[f], 0.0f);
    wmma::fill_fragment(accV[f], 0.0f);
  }
  for (int n = nFirst; n < nEnd; ++n) {
    for (int i0 = j0; i0 < T; i0 += kTcTile) {  // queries before j0 never see these keys
      const int nq = min(kTcTile, T - i0);
      __syncthreads();  // the previous step is done with Qs, Gs, St, Dt
      load_rows<kTcTile, DP>(Qs, LD, q + static_cast<size_t>(n) * D, qStride, i0, nq, D, scale);
      load_rows<kTcTile, DP>(Gs, LD, dout + static_cast<size_t>(n) * D, qStride, i0, nq, D);
      if (tid < kTcTile) {
        colLse[tid] = tid < nq ? lse[static_cast<size_t>(n) * T + i0 + tid] : 0.0f;
        colDelta[tid] = tid < nq ? delta[static_cast<size_t>(n) * T + i0 + tid] : 0.0f;
      }
      __syncthreads();
      {  // warp -> (key block kb, query block warp & 1)
        FragC s, dp;
        wmma::fill_fragment(s, 0.0f);
        wmma::fill_fragment(dp, 0.0f);
        mma_abt<DP / 8>(s, Ks + kb * 16 * LD, LD, Qs + (warp & 1) * 16 * LD, LD);
        mma_abt<DP / 8>(dp, Vs + kb * 16 * LD, LD, Gs + (warp & 1) * 16 * LD, LD);
        wmma::store_matrix_sync(St + kb * 16 * kTcLS + (warp & 1) * 16, s, kTcLS, wmma::mem_row_major);
        wmma::store_matrix_sync(Dt + kb * 16 * kTcLS + (warp & 1) * 16, dp, kTcLS, wmma::mem_row_major);
      }
      __syncthreads();
      for (int e = tid; e < kTcRows * kTcTile; e += kTcThreads) {
        const int r = e / kTcTile, c = e % kTcTile, j = j0 + r, i = i0 + c;
        float p = 0.0f, ds = 0.0f;
        if (r < nk && c < nq && i >= j) {
          p = expf(St[r * kTcLS + c] - colLse[c]);
          ds = p * (Dt[r * kTcLS + c] - colDelta[c]);
        }
        St[r * kTcLS + c] = p;
        Dt[r * kTcLS + c] = ds;
      }
      __syncthreads();
#pragma unroll
      for (int f = 0; f < FR; ++f) {
        const int col = ((warp & 1) * FR + f) * 16;
        mma_ab32(accV[f], St + kb * 16 * kTcLS, kTcLS, Gs + col, LD);
        mma_ab32(accK[f], Dt + kb * 16 * kTcLS, kTcLS, Qs + col, LD);
      }
    }
  }
  __syncthreads();  // every warp is done with Ks and Vs before they hold dK and dV
#pragma unroll
  for (int f = 0; f < FR; ++f) {
    const int col = ((warp & 1) * FR + f) * 16;
    wmma::store_matrix_sync(Ks + kb * 16 * LD + col, accK[f], LD, wmma::mem_row_major);
    wmma::store_matrix_sync(Vs + kb * 16 * LD + col, accV[f], LD, wmma::mem_row_major);
  }
  __syncthreads();
  for (int e = tid; e < kTcRows * DP; e += kTcThreads) {
    const int r = e / DP, d = e % DP;
    if (r < nk && d < D) {
      const size_t o = perHead ? (static_cast<size_t>(nFirst) * T + j0 + r) * D + d
                               : static_cast<size_t>(j0 + r) * kvStride + static_cast<size_t>(m) * D + d;
      dk[o] = Ks[r * LD + d];
      dv[o] = Vs[r * LD + d];
    }
  }
}

// dk[j, m, :] = sum over the group's heads g of part[m * group + g, j, :] (part laid out [N][T][D]), in
// head order, so the result does not depend on scheduling.
__global__ void attention_group_sum_kernel(float* dk, float* dv, const float* partK, const float* partV, int T, int N,
                                           int NKV, int D) {
  const int group = N / NKV;
  const size_t total = static_cast<size_t>(T) * NKV * D, headTD = static_cast<size_t>(T) * D;
  for (size_t e = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t j = e / (static_cast<size_t>(NKV) * D), rem = e % (static_cast<size_t>(NKV) * D);
    const size_t m = rem / D, d = rem % D;
    const size_t src = m * group * headTD + j * D + d;
    float sk = 0.0f, sv = 0.0f;
    for (int g = 0; g < group; ++g) {
      sk += partK[src + g * headTD];
      sv += partV[src + g * headTD];
    }
    dk[e] = sk;
    dv[e] = sv;
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

template <typename Kernel>
void allow_shared_tc(Kernel k, size_t bytes) {
  CLAAS_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int FR>
struct ForwardTcLaunch {
  static void run(cudaStream_t s, float* out, float* lse, const float* q, const float* k, const float* v, int T, int N,
                  int NKV, int D, int q0) {
    const size_t bytes = tc_shared_bytes<FR>(1);
    allow_shared_tc(attention_forward_tc_kernel<FR>, bytes);
    const dim3 grid((T + kTcRows - 1) / kTcRows, N);
    attention_forward_tc_kernel<FR><<<grid, kTcThreads, bytes, s>>>(out, lse, q, k, v, T, N, NKV, D, q0,
                                                                   1.0f / sqrtf(static_cast<float>(D)));
    CLAAS_LAUNCHED();
  }
};

template <int FR>
struct BackwardTcLaunch {
  static void run(cudaStream_t s, float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                  const float* v, const float* lse, float* scratch, int T, int N, int NKV, int D) {
    const float* delta = scratch;
    const float scale = 1.0f / sqrtf(static_cast<float>(D));
    const size_t bytes = tc_shared_bytes<FR>(2);
    allow_shared_tc(attention_dq_tc_kernel<FR>, bytes);
    attention_dq_tc_kernel<FR><<<dim3((T + kTcRows - 1) / kTcRows, N), kTcThreads, bytes, s>>>(
        dq, dout, q, k, v, lse, delta, T, N, NKV, D, scale);
    CLAAS_LAUNCHED();
    allow_shared_tc(attention_dkv_tc_kernel<FR>, bytes);
    const unsigned keyBlocks = (T + kTcRows - 1) / kTcRows;
    if (N == NKV) {
      attention_dkv_tc_kernel<FR><<<dim3(keyBlocks, NKV), kTcThreads, bytes, s>>>(dk, dv, dout, q, k, v, lse, delta, T,
                                                                                 N, NKV, D, scale, false);
      CLAAS_LAUNCHED();
    } else {
      // The per-head shares go to the scratch after delta (see attention_backward_scratch).
      float* partK = scratch + static_cast<size_t>(N) * T;
      float* partV = partK + static_cast<size_t>(N) * T * D;
      attention_dkv_tc_kernel<FR><<<dim3(keyBlocks, N), kTcThreads, bytes, s>>>(partK, partV, dout, q, k, v, lse, delta,
                                                                                T, N, NKV, D, scale, true);
      CLAAS_LAUNCHED();
      attention_group_sum_kernel<<<blocks_for(static_cast<size_t>(T) * NKV * D, 256), 256, 0, s>>>(dk, dv, partK, partV,
                                                                                                  T, N, NKV, D);
      CLAAS_LAUNCHED();
    }
  }
};

// Tensor-core kernels with FR = ceil(D / 32) column blocks of 32 (D <= 128).
template <template <int> class Launch, typename... Args>
void dispatch_tc(int D, Args... args) {
  if (D <= 32) Launch<1>::run(args...);
  else if (D <= 64) Launch<2>::run(args...);
  else if (D <= 96) Launch<3>::run(args...);
  else Launch<4>::run(args...);
}

constexpr int kTcMaxD = 128;

}  // namespace

void attention(cudaStream_t s, float* out_TND, float* lse_NT, const float* q_TND, const float* k_TMD,
               const float* v_TMD, int T, int N, int NKV, int D, int q0) {
  check_shape(N, NKV, D);
  if (T == 0) return;
  if (D <= kTcMaxD) dispatch_tc<ForwardTcLaunch>(D, s, out_TND, lse_NT, q_TND, k_TMD, v_TMD, T, N, NKV, D, q0);
  else dispatch<ForwardLaunch>(D, s, out_TND, lse_NT, q_TND, k_TMD, v_TMD, T, N, NKV, D, q0);
}

size_t attention_backward_scratch(int T, int N, int NKV, int D) {
  const size_t delta = static_cast<size_t>(N) * T;
  return D <= kTcMaxD && N != NKV ? delta + 2 * delta * D : delta;
}

void attention_backward(cudaStream_t s, float* dq_TND, float* dk_TMD, float* dv_TMD, const float* dout_TND,
                        const float* q_TND, const float* k_TMD, const float* v_TMD, const float* out_TND,
                        const float* lse_NT, int T, int N, int NKV, int D, float* scratch) {
  check_shape(N, NKV, D);
  if (T == 0) return;
  attention_delta_kernel<<<(T * N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(scratch, dout_TND, out_TND, T, N, D);
  CLAAS_LAUNCHED();
  if (D <= kTcMaxD) {
    dispatch_tc<BackwardTcLaunch>(D, s, dq_TND, dk_TMD, dv_TMD, dout_TND, q_TND, k_TMD, v_TMD, lse_NT, scratch, T, N,
                                  NKV, D);
  } else {
    dispatch<BackwardLaunch>(D, s, dq_TND, dk_TMD, dv_TMD, dout_TND, q_TND, k_TMD, v_TMD, lse_NT,
                             static_cast<const float*>(scratch), T, N, NKV, D);
  }
}

}  // namespace claas::cuda
