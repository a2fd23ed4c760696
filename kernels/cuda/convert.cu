// fp32 <-> bf16 copies: cuBLAS takes one element type for both GEMM inputs, so activations entering
// a bf16 GEMM are rounded to bf16 first (round to nearest even).
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace claas::cuda {

namespace {
__global__ void to_bf16_kernel(bf16* out, const float* in, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(in[i]);
  }
}
__global__ void to_float_kernel(float* out, const bf16* in, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = __bfloat162float(in[i]);
  }
}
}  // namespace

void to_bf16(cudaStream_t s, bf16* out_n, const float* in_n, size_t n) {
  if (n == 0) return;
  to_bf16_kernel<<<blocks_for(n, 256), 256, 0, s>>>(out_n, in_n, n);
  CLAAS_LAUNCHED();
}

void to_float(cudaStream_t s, float* out_n, const bf16* in_n, size_t n) {
  if (n == 0) return;
  to_float_kernel<<<blocks_for(n, 256), 256, 0, s>>>(out_n, in_n, n);
  CLAAS_LAUNCHED();
}

}  // namespace claas::cuda
