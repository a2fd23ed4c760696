// AdamW (torch.optim.AdamW semantics) with the global-norm clip folded in as a gradient scale, the
// squared-norm reduction the clip needs, and the EMA copy of the adapter.
#include <cmath>

#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace claas::cuda {

namespace {
__global__ void adamw_kernel(float* p, float* m, float* v, const float* g, size_t n, float lr, float beta1, float beta2,
                             float eps, float decay, float stepSize, float bc2Sqrt, float gradScale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float gi = g[i] * gradScale;
    float pi = p[i] * decay;
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    pi -= stepSize * mi / (sqrtf(vi) / bc2Sqrt + eps);
    p[i] = pi, m[i] = mi, v[i] = vi;
  }
}
__global__ void sum_squares_kernel(double* out, const float* g, size_t n) {
  double acc = 0.0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    acc += static_cast<double>(g[i]) * g[i];
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) atomicAdd(out, acc);
}
__global__ void ema_kernel(float* ema, const float* p, size_t n, float rate) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    ema[i] = (1.0f - rate) * ema[i] + rate * p[i];
  }
}
}  // namespace

void adamw(cudaStream_t s, float* p, float* m, float* v, const float* g, size_t n, float lr, float beta1, float beta2,
           float eps, float weightDecay, int64_t step, float gradScale) {
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  adamw_kernel<<<blocks_for(n, 256), 256, 0, s>>>(p, m, v, g, n, lr, beta1, beta2, eps, 1.0f - lr * weightDecay,
                                                  static_cast<float>(lr / bc1), static_cast<float>(std::sqrt(bc2)),
                                                  gradScale);
  CLAAS_LAUNCHED();
}

void sum_squares(cudaStream_t s, double* out, const float* g, size_t n) {
  if (n == 0) return;
  const unsigned b = blocks_for(n, 256);
  sum_squares_kernel<<<b < 1024 ? b : 1024, 256, 0, s>>>(out, g, n);
  CLAAS_LAUNCHED();
}

void ema_update(cudaStream_t s, float* ema, const float* p, size_t n, float rate) {
  if (n == 0) return;
  ema_kernel<<<blocks_for(n, 256), 256, 0, s>>>(ema, p, n, rate);
  CLAAS_LAUNCHED();
}

}  // namespace claas::cuda
