// Causal grouped-query attention without a T x T matrix: each query row keeps only its log-sum-exp,
// and the backward recomputes the probabilities from it (flash-attention style, on the CPU).
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/ops.h"

namespace claas::cpu {

static inline float dot(const float* a, const float* b, int D) {
  float s = 0.0f;
  // Reordering the sum is fine here; without the pragma the compiler keeps it scalar.
#pragma omp simd reduction(+ : s)
  for (int d = 0; d < D; ++d) s += a[d] * b[d];
  return s;
}

void attention(float* out_TND, float* lse_NT, const float* q_TND, const float* k_TMD, const float* v_TMD, int T,
               int N, int NKV, int D) {
  const int group = N / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const size_t qs = static_cast<size_t>(N) * D, ks = static_cast<size_t>(NKV) * D;
#pragma omp parallel
  {
    std::vector<float> p(T);
#pragma omp for collapse(2) schedule(dynamic, 8)
    for (int n = 0; n < N; ++n) {
      for (int i = 0; i < T; ++i) {
        const int m = n / group;
        const float* q = q_TND + i * qs + static_cast<size_t>(n) * D;
        float mx = -INFINITY;
        for (int j = 0; j <= i; ++j) {
          p[j] = scale * dot(q, k_TMD + j * ks + static_cast<size_t>(m) * D, D);
          mx = p[j] > mx ? p[j] : mx;
        }
        float sum = 0.0f;
        for (int j = 0; j <= i; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        float* o = out_TND + i * qs + static_cast<size_t>(n) * D;
        std::memset(o, 0, sizeof(float) * D);
        const float inv = 1.0f / sum;
        for (int j = 0; j <= i; ++j) {
          const float* v = v_TMD + j * ks + static_cast<size_t>(m) * D;
          const float w = p[j] * inv;
          for (int d = 0; d < D; ++d) o[d] += w * v[d];
        }
        lse_NT[static_cast<size_t>(n) * T + i] = mx + std::log(sum);
      }
    }
  }
}

void attention_backward(float* dq_TND, float* dk_TMD, float* dv_TMD, const float* dout_TND,
                        const float* q_TND, const float* k_TMD, const float* v_TMD, const float* out_TND,
                        const float* lse_NT, int T, int N, int NKV, int D, float* scratch) {
  const int group = N / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const size_t qs = static_cast<size_t>(N) * D, ks = static_cast<size_t>(NKV) * D;
  const size_t headTD = static_cast<size_t>(T) * D;
  // Per query head key/value gradients, reduced into their kv head afterwards, so heads run in parallel.
  float* dkh_NTD = scratch;
  float* dvh_NTD = scratch + N * headTD;
  std::memset(scratch, 0, sizeof(float) * 2 * N * headTD);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const int m = n / group;
    float* dkh = dkh_NTD + n * headTD;
    float* dvh = dvh_NTD + n * headTD;
    for (int i = 0; i < T; ++i) {
      const float* q = q_TND + i * qs + static_cast<size_t>(n) * D;
      const float* o = out_TND + i * qs + static_cast<size_t>(n) * D;
      const float* dO = dout_TND + i * qs + static_cast<size_t>(n) * D;
      float* dq = dq_TND + i * qs + static_cast<size_t>(n) * D;
      std::memset(dq, 0, sizeof(float) * D);
      const float lse = lse_NT[static_cast<size_t>(n) * T + i];
      const float Di = dot(dO, o, D);
      for (int j = 0; j <= i; ++j) {
        const float* k = k_TMD + j * ks + static_cast<size_t>(m) * D;
        const float* v = v_TMD + j * ks + static_cast<size_t>(m) * D;
        const float p = std::exp(scale * dot(q, k, D) - lse);
        const float ds = p * (dot(dO, v, D) - Di) * scale;
        float* dk = dkh + static_cast<size_t>(j) * D;
        float* dv = dvh + static_cast<size_t>(j) * D;
        for (int d = 0; d < D; ++d) {
          dq[d] += ds * k[d];
          dk[d] += ds * q[d];
          dv[d] += p * dO[d];
        }
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    for (int m = 0; m < NKV; ++m) {
      float* dk = dk_TMD + t * ks + static_cast<size_t>(m) * D;
      float* dv = dv_TMD + t * ks + static_cast<size_t>(m) * D;
      std::memset(dk, 0, sizeof(float) * D);
      std::memset(dv, 0, sizeof(float) * D);
      for (int n = m * group; n < (m + 1) * group; ++n) {
        const float* a = dkh_NTD + n * headTD + static_cast<size_t>(t) * D;
        const float* b = dvh_NTD + n * headTD + static_cast<size_t>(t) * D;
        for (int d = 0; d < D; ++d) {
          dk[d] += a[d];
          dv[d] += b[d];
        }
      }
    }
  }
}

}  // namespace claas::cpu
