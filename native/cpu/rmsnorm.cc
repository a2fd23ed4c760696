// RMSNorm and its input gradient (the norm weights are frozen, so no weight gradient).
#include <cmath>

#include "cpu/ops.h"

namespace claas::cpu {

void rmsnorm(float* y_ND, float* rstd_N, const float* x_ND, const float* w_D, int N, int D, float eps) {
#pragma omp parallel for schedule(static) if (N * D > 32768)
  for (int n = 0; n < N; ++n) {
    const float* x = x_ND + static_cast<size_t>(n) * D;
    float* y = y_ND + static_cast<size_t>(n) * D;
    double ss = 0.0;
    for (int d = 0; d < D; ++d) ss += static_cast<double>(x[d]) * x[d];
    const float r = static_cast<float>(1.0 / std::sqrt(ss / D + eps));
    if (rstd_N) rstd_N[n] = r;
    for (int d = 0; d < D; ++d) y[d] = w_D[d] * (x[d] * r);
  }
}

void rmsnorm_backward(float* dx_ND, const float* dy_ND, const float* x_ND, const float* rstd_N,
                      const float* w_D, int N, int D, bool accumulate) {
#pragma omp parallel for schedule(static) if (N * D > 32768)
  for (int n = 0; n < N; ++n) {
    const float* x = x_ND + static_cast<size_t>(n) * D;
    const float* dy = dy_ND + static_cast<size_t>(n) * D;
    float* dx = dx_ND + static_cast<size_t>(n) * D;
    const float r = rstd_N[n];
    double dot = 0.0;  // sum(g * xhat)
    for (int d = 0; d < D; ++d) dot += static_cast<double>(dy[d]) * w_D[d] * x[d] * r;
    const float mean = static_cast<float>(dot / D);
    for (int d = 0; d < D; ++d) {
      const float g = dy[d] * w_D[d];
      const float v = r * (g - x[d] * r * mean);
      dx[d] = accumulate ? dx[d] + v : v;
    }
  }
}

}  // namespace claas::cpu
