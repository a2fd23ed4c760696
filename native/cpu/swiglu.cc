// SwiGLU gate h = silu(g) * u and its gradients.
#include <cmath>

#include "cpu/ops.h"

namespace claas::cpu {

void swiglu(float* h_n, const float* g_n, const float* u_n, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) {
    const float sg = 1.0f / (1.0f + std::exp(-g_n[i]));
    h_n[i] = g_n[i] * sg * u_n[i];
  }
}

void swiglu_backward(float* dg_n, float* du_n, const float* dh_n, const float* g_n, const float* u_n, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) {
    const float g = g_n[i];
    const float sg = 1.0f / (1.0f + std::exp(-g));
    du_n[i] = dh_n[i] * g * sg;
    dg_n[i] = dh_n[i] * u_n[i] * sg * (1.0f + g * (1.0f - sg));
  }
}

}  // namespace claas::cpu
