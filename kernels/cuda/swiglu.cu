// SwiGLU gate h = silu(g) * u and its gradients, elementwise.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace claas::cuda {

namespace {
__global__ void swiglu_kernel(float* h, const float* g, const float* u, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float sg = 1.0f / (1.0f + expf(-g[i]));
    h[i] = g[i] * sg * u[i];
  }
}
__global__ void swiglu_backward_kernel(float* dg, float* du, const float* dh, const float* g, const float* u, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float x = g[i], sg = 1.0f / (1.0f + expf(-x));
    du[i] = dh[i] * x * sg;
    dg[i] = dh[i] * u[i] * sg * (1.0f + x * (1.0f - sg));
  }
}
}  // namespace

void swiglu(cudaStream_t s, float* h_n, const float* g_n, const float* u_n, size_t n) {
  if (n == 0) return;
  swiglu_kernel<<<blocks_for(n, 256), 256, 0, s>>>(h_n, g_n, u_n, n);
  CLAAS_LAUNCHED();
}

void swiglu_backward(cudaStream_t s, float* dg_n, float* du_n, const float* dh_n, const float* g_n, const float* u_n,
                     size_t n) {
  if (n == 0) return;
  swiglu_backward_kernel<<<blocks_for(n, 256), 256, 0, s>>>(dg_n, du_n, dh_n, g_n, u_n, n);
  CLAAS_LAUNCHED();
}

}  // namespace claas::cuda
