// Row-wise log-softmax over the vocabulary and its backward.
#include <cmath>

#include "cpu/ops.h"

namespace claas::cpu {

void log_softmax(float* out_RV, float* lse_R, const float* logits_RV, int R, int V) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const float* x = logits_RV + static_cast<size_t>(r) * V;
    float* y = out_RV + static_cast<size_t>(r) * V;
    float mx = x[0];
    for (int v = 1; v < V; ++v) mx = x[v] > mx ? x[v] : mx;
    double sum = 0.0;
    for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(x[v] - mx));
    const float lse = mx + static_cast<float>(std::log(sum));
    for (int v = 0; v < V; ++v) y[v] = x[v] - lse;
    if (lse_R) lse_R[r] = lse;
  }
}

void log_softmax_backward(float* dlogits_RV, const float* ds_RV, const float* logp_RV, int R, int V) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const float* ds = ds_RV + static_cast<size_t>(r) * V;
    const float* lp = logp_RV + static_cast<size_t>(r) * V;
    float* dl = dlogits_RV + static_cast<size_t>(r) * V;
    double sum = 0.0;
    for (int v = 0; v < V; ++v) sum += ds[v];
    const float s = static_cast<float>(sum);
    for (int v = 0; v < V; ++v) dl[v] = ds[v] - std::exp(lp[v]) * s;
  }
}

}  // namespace claas::cpu
