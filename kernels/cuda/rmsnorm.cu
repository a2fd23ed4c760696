// RMSNorm and its input gradient, one block per row (fp32; the norm weights stay fp32 on device).
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace claas::cuda {

namespace {
__global__ void rmsnorm_kernel(float* y, float* rstd, const float* x, const float* w, int D, float eps) {
  const float* xr = x + static_cast<size_t>(blockIdx.x) * D;
  float* yr = y + static_cast<size_t>(blockIdx.x) * D;
  float ss = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) ss += xr[d] * xr[d];
  ss = block_sum(ss);
  const float r = rsqrtf(ss / D + eps);
  if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (int d = threadIdx.x; d < D; d += blockDim.x) yr[d] = w[d] * (xr[d] * r);
}

__global__ void rmsnorm_backward_kernel(float* dx, const float* dy, const float* x, const float* rstd,
                                        const float* w, int D, bool accumulate) {
  const size_t off = static_cast<size_t>(blockIdx.x) * D;
  const float r = rstd[blockIdx.x];
  float dot = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) dot += dy[off + d] * w[d] * x[off + d] * r;
  const float mean = block_sum(dot) / D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const float v = r * (dy[off + d] * w[d] - x[off + d] * r * mean);
    dx[off + d] = accumulate ? dx[off + d] + v : v;
  }
}

unsigned threads_for(int D) { return D >= 1024 ? 1024 : D >= 256 ? 256 : 128; }
}  // namespace

void rmsnorm(cudaStream_t s, float* y_ND, float* rstd_N, const float* x_ND, const float* w_D, int N, int D, float eps) {
  if (N == 0) return;
  rmsnorm_kernel<<<N, threads_for(D), 0, s>>>(y_ND, rstd_N, x_ND, w_D, D, eps);
  CLAAS_LAUNCHED();
}

void rmsnorm_backward(cudaStream_t s, float* dx_ND, const float* dy_ND, const float* x_ND, const float* rstd_N,
                      const float* w_D, int N, int D, bool accumulate) {
  if (N == 0) return;
  rmsnorm_backward_kernel<<<N, threads_for(D), 0, s>>>(dx_ND, dy_ND, x_ND, rstd_N, w_D, D, accumulate);
  CLAAS_LAUNCHED();
}

}  // namespace claas::cuda
