// AdamW update with decoupled weight decay, as torch.optim.AdamW does it.
#include <cmath>

#include "cpu/ops.h"

namespace claas::cpu {

void adamw(float* p, float* m, float* v, const float* g, size_t n, float lr, float beta1, float beta2, float eps,
           float weightDecay, int64_t step) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float stepSize = static_cast<float>(lr / bc1);
  const float bc2Sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = 1.0f - lr * weightDecay;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) {
    p[i] *= decay;
    m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
    v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
    p[i] -= stepSize * m[i] / (std::sqrt(v[i]) / bc2Sqrt + eps);
  }
}

}  // namespace claas::cpu
