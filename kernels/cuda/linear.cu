// Frozen base projection y = x W^T + b: a bf16 cuBLAS GEMM with fp32 output, then the bias.
#include "cuda/blas.h"
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace claas::cuda {

namespace {
__global__ void add_bias_kernel(float* y, const float* b, size_t n, int O) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    y[i] += b[i % O];
  }
}
}  // namespace

void linear(const Blas& blas, float* y_TO, const bf16* x_TI, const bf16* W_OI, const float* b_O, int T, int I, int O) {
  gemm(blas, Trans::N, Trans::T, T, O, I, 1.0f, x_TI, I, W_OI, I, CUDA_R_16BF, 0.0f, y_TO, O);
  if (b_O && T > 0) {
    const size_t n = static_cast<size_t>(T) * O;
    add_bias_kernel<<<blocks_for(n, 256), 256, 0, blas.stream()>>>(y_TO, b_O, n, O);
    CLAAS_LAUNCHED();
  }
}

void linear_backward_input(const Blas& blas, float* dx_TI, const bf16* dy_TO, const bf16* W_OI, int T, int I, int O,
                           bool accumulate) {
  gemm(blas, Trans::N, Trans::N, T, I, O, 1.0f, dy_TO, O, W_OI, I, CUDA_R_16BF, accumulate ? 1.0f : 0.0f, dx_TI, I);
}

}  // namespace claas::cuda
