// Rotate-half RoPE in place on x[T, N, D]; the backward is the inverse rotation.
#include "cuda/common.cuh"
#include "cuda/ops.h"

namespace claas::cuda {

namespace {
// One block per (token, head); threads over the D/2 rotation pairs.
__global__ void rope_kernel(float* x, const float* cosT, const float* sinT, int N, int D, float sign) {
  const int t = blockIdx.x / N, D2 = D / 2;
  float* row = x + static_cast<size_t>(blockIdx.x) * D;
  const float* c = cosT + static_cast<size_t>(t) * D2;
  const float* sn = sinT + static_cast<size_t>(t) * D2;
  for (int i = threadIdx.x; i < D2; i += blockDim.x) {
    const float x1 = row[i], x2 = row[i + D2], si = sign * sn[i];
    row[i] = x1 * c[i] - x2 * si;
    row[i + D2] = x2 * c[i] + x1 * si;
  }
}
void rotate(cudaStream_t s, float* x, const float* c, const float* sn, int T, int N, int D, float sign) {
  if (T == 0) return;
  rope_kernel<<<T * N, 64, 0, s>>>(x, c, sn, N, D, sign);
  CLAAS_LAUNCHED();
}
}  // namespace

void rope(cudaStream_t s, float* x_TND, const float* cos_TD2, const float* sin_TD2, int T, int N, int D) {
  rotate(s, x_TND, cos_TD2, sin_TD2, T, N, D, 1.0f);
}

void rope_backward(cudaStream_t s, float* dx_TND, const float* cos_TD2, const float* sin_TD2, int T, int N, int D) {
  rotate(s, dx_TND, cos_TD2, sin_TD2, T, N, D, -1.0f);
}

}  // namespace claas::cuda
