// Rotary position embedding, rotate-half layout (first half / second half of each head), and its
// backward, which is the inverse rotation.
#include <cmath>

#include "cpu/ops.h"

namespace claas::cpu {

void rope_tables(float* cos_TD2, float* sin_TD2, const int32_t* positions_T, int T, int D, double theta) {
  const int D2 = D / 2;
  for (int i = 0; i < D2; ++i) {
    const double invFreq = std::pow(theta, -2.0 * i / D);
    for (int t = 0; t < T; ++t) {
      const double a = positions_T[t] * invFreq;
      cos_TD2[static_cast<size_t>(t) * D2 + i] = static_cast<float>(std::cos(a));
      sin_TD2[static_cast<size_t>(t) * D2 + i] = static_cast<float>(std::sin(a));
    }
  }
}

static void rotate(float* x_TND, const float* cos_TD2, const float* sin_TD2, int T, int N, int D, float sign) {
  const int D2 = D / 2;
#pragma omp parallel for schedule(static) if (T * N * D > 32768)
  for (int t = 0; t < T; ++t) {
    const float* c = cos_TD2 + static_cast<size_t>(t) * D2;
    const float* s = sin_TD2 + static_cast<size_t>(t) * D2;
    for (int n = 0; n < N; ++n) {
      float* x = x_TND + (static_cast<size_t>(t) * N + n) * D;
      for (int i = 0; i < D2; ++i) {
        const float x1 = x[i], x2 = x[i + D2], si = sign * s[i];
        x[i] = x1 * c[i] - x2 * si;
        x[i + D2] = x2 * c[i] + x1 * si;
      }
    }
  }
}

void rope(float* x_TND, const float* cos_TD2, const float* sin_TD2, int T, int N, int D) {
  rotate(x_TND, cos_TD2, sin_TD2, T, N, D, 1.0f);
}

void rope_backward(float* dx_TND, const float* cos_TD2, const float* sin_TD2, int T, int N, int D) {
  rotate(dx_TND, cos_TD2, sin_TD2, T, N, D, -1.0f);
}

}  // namespace claas::cpu
