// The per-position SDPO loss (cpu/sdpo_loss.cc defines it) for many rows at once, one block per row:
// the student's mass outside the teacher's top-K is summed over the vocabulary with a shared-memory
// bitmap of the top-K ids (not 1 - sum, which cancels), then one thread works out the K + 1 categories
// in double and scatters the gradient. Also the teacher-side tail and sampled-token log-probs.
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace claas::cuda {

namespace {

constexpr int kThreads = 256;
constexpr double kTailFloor = 1e-12;

__device__ inline double logaddexp(double a, double b) {
  const double m = fmax(a, b);
  if (m == -INFINITY) return -INFINITY;
  return m + log(exp(a - m) + exp(b - m));
}

// Marks idx_K in the bitmap and returns (to every thread) the sum of exp(logp) over the unmarked ids.
__device__ double mass_outside(uint32_t* bits, const float* logp, int V, const int32_t* idx, int K) {
  const int words = (V + 31) / 32;
  for (int w = threadIdx.x; w < words; w += blockDim.x) bits[w] = 0u;
  __syncthreads();
  for (int k = threadIdx.x; k < K; k += blockDim.x) atomicOr(&bits[idx[k] >> 5], 1u << (idx[k] & 31));
  __syncthreads();
  double acc = 0.0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    if (!(bits[v >> 5] >> (v & 31) & 1u)) acc += exp(static_cast<double>(logp[v]));
  }
  return block_sum(acc);
}

__global__ void sdpo_loss_kernel(float* ds_RV, double* values, const float* s_RV, int V, const int32_t* y_R,
                                 const int32_t* tIdx, const float* tLogp, const float* tTail, const float* tToken,
                                 int K, const float* old_R, const float* base_R, SdpoLossOptions opt, double coef) {
  extern __shared__ uint32_t bits[];
  const int r = blockIdx.x;
  const float* s = s_RV + static_cast<size_t>(r) * V;
  float* ds = ds_RV + static_cast<size_t>(r) * V;
  const int32_t* idx = tIdx + static_cast<size_t>(r) * K;
  const float* lp = tLogp + static_cast<size_t>(r) * K;
  for (int v = threadIdx.x; v < V; v += blockDim.x) ds[v] = 0.0f;
  double qTail = 0.0;
  if (!opt.sampledToken && opt.tail) qTail = mass_outside(bits, s, V, idx, K);
  __syncthreads();  // ds zeroed before the scatter below
  if (threadIdx.x != 0) return;

  const int y = y_R[r];
  const double sy = s[y];
  double w = 1.0, D = 0.0;
  bool clipped = false;
  const float old = old_R ? old_R[r] : NAN;
  if (!isnan(old)) {
    const double ratio = exp(fmin(fmax(sy - static_cast<double>(old), -20.0), 20.0));
    clipped = ratio > opt.isClip;
    w = fmin(ratio, static_cast<double>(opt.isClip));
  }
  const double scale = coef * w;
  if (opt.sampledToken) {
    const double adv = sy - tToken[r];
    D = adv * sy;
    ds[y] += static_cast<float>(scale * adv);
  } else {
    const double a = opt.alpha;
    // g_c = dD/dlogQ_c for one category.
    auto term = [&](double logP, double logQ, double& g) {
      const double P = exp(logP), Q = exp(logQ);
      if (a == 0.0) {
        g = -P;
        return P * (logP - logQ);
      }
      if (a == 1.0) {
        g = Q * (logQ - logP + 1.0);
        return Q * (logQ - logP);
      }
      const double logM = logaddexp(log(a) + logP, log1p(-a) + logQ);
      g = (1.0 - a) * Q * (logQ - logM);
      return a * P * (logP - logM) + (1.0 - a) * Q * (logQ - logM);
    };
    if (opt.tail) {
      const bool floored = qTail < kTailFloor;
      if (floored) qTail = kTailFloor;
      double gTail;
      D = term(fmax(static_cast<double>(tTail[r]), log(kTailFloor)), log(qTail), gTail);
      if (floored) gTail = 0.0;
      for (int k = 0; k < K; ++k) {
        double g;
        const double logQ = s[idx[k]];
        D += term(lp[k], logQ, g);
        ds[idx[k]] += static_cast<float>(scale * (g - gTail * exp(logQ) / qTail));
      }
    } else {
      double lseP = -INFINITY, lseQ = -INFINITY;
      for (int k = 0; k < K; ++k) {
        lseP = logaddexp(lseP, lp[k]);
        lseQ = logaddexp(lseQ, s[idx[k]]);
      }
      double gSum = 0.0, g;
      for (int k = 0; k < K; ++k) {
        D += term(lp[k] - lseP, s[idx[k]] - lseQ, g);
        gSum += g;
      }
      for (int k = 0; k < K; ++k) {
        const double logQ = s[idx[k]] - lseQ;
        term(lp[k] - lseP, logQ, g);
        ds[idx[k]] += static_cast<float>(scale * (g - exp(logQ) * gSum));
      }
    }
  }
  const double rRaw = sy - static_cast<double>(base_R[r]);
  const double rc = fmin(fmax(rRaw, -20.0), 20.0);
  if (opt.beta != 0.0f && rRaw >= -20.0 && rRaw <= 20.0) ds[y] += static_cast<float>(coef * opt.beta * (exp(rc) - 1.0));
  double* out = values + static_cast<size_t>(r) * kSdpoRowValues;
  out[0] = D;
  out[1] = w;
  out[2] = exp(rc) - 1.0 - rc;
  out[3] = clipped ? 1.0 : 0.0;
}

__global__ void teacher_tail_kernel(float* tail_R, float* token_R, const float* logp_RV, const int32_t* idx_RK,
                                    const int32_t* y_R, int V, int K) {
  extern __shared__ uint32_t bits[];
  const int r = blockIdx.x;
  const float* lp = logp_RV + static_cast<size_t>(r) * V;
  const double tail = mass_outside(bits, lp, V, idx_RK + static_cast<size_t>(r) * K, K);
  if (threadIdx.x == 0) {
    tail_R[r] = tail > 0.0 ? static_cast<float>(log(tail)) : -INFINITY;
    token_R[r] = lp[y_R[r]];
  }
}

size_t bitmap_bytes(int V) { return sizeof(uint32_t) * ((V + 31) / 32); }

template <typename Kernel>
void allow_shared(Kernel k, size_t bytes) {
  if (bytes > 48 * 1024) CLAAS_CUDA(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

}  // namespace

void sdpo_loss(cudaStream_t s, float* ds_RV, double* values_R4, const float* s_RV, int R, int V, const int32_t* y_R,
               const int32_t* tIdx_RK, const float* tLogp_RK, const float* tTail_R, const float* tToken_R, int K,
               const float* old_R, const float* base_R, const SdpoLossOptions& opt, double coef) {
  if (R == 0) return;
  const size_t bytes = bitmap_bytes(V);
  allow_shared(sdpo_loss_kernel, bytes);
  sdpo_loss_kernel<<<R, kThreads, bytes, s>>>(ds_RV, values_R4, s_RV, V, y_R, tIdx_RK, tLogp_RK, tTail_R, tToken_R, K,
                                              old_R, base_R, opt, coef);
  CLAAS_LAUNCHED();
}

void sdpo_teacher_tail(cudaStream_t s, float* tail_R, float* token_R, const float* logp_RV, const int32_t* idx_RK,
                       const int32_t* y_R, int R, int V, int K) {
  if (R == 0) return;
  const size_t bytes = bitmap_bytes(V);
  allow_shared(teacher_tail_kernel, bytes);
  teacher_tail_kernel<<<R, kThreads, bytes, s>>>(tail_R, token_R, logp_RV, idx_RK, y_R, V, K);
  CLAAS_LAUNCHED();
}

}  // namespace claas::cuda
