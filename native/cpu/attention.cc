// Causal grouped-query attention in blocks of query rows: for each head and block of up to 64
// queries, scores against the keys up to the block's last position are one GEMM, softmaxed in place,
// and multiplied by V in another. Only a 64 x T tile per thread exists at once (never T x T); each
// row keeps its log-sum-exp so the backward can recompute the probabilities.
#include <cblas.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/ops.h"

namespace claas::cpu {

namespace {

constexpr int kBlock = 64;

// S[r, j] for query rows i0..i0+R of head n (at positions q0 + row), keys 0..Tk: scale * q k^T,
// masked above the diagonal.
void scores(float* S, const float* q_TND, const float* k_TMD, int i0, int R, int Tk, int n, int m, int N, int NKV,
            int D, float scale, int q0) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, Tk, D, scale, q_TND + (static_cast<size_t>(i0) * N + n) * D,
              N * D, k_TMD + static_cast<size_t>(m) * D, NKV * D, 0.0f, S, Tk);
  for (int r = 0; r < R; ++r) {
    for (int j = q0 + i0 + r + 1; j < Tk; ++j) S[static_cast<size_t>(r) * Tk + j] = -INFINITY;
  }
}

}  // namespace

void attention(float* out_TND, float* lse_NT, const float* q_TND, const float* k_TMD, const float* v_TMD, int T,
               int N, int NKV, int D, int q0) {
  const int group = N / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int blocks = (T + kBlock - 1) / kBlock;
#pragma omp parallel
  {
    std::vector<float> S(static_cast<size_t>(kBlock) * (q0 + T));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int n = 0; n < N; ++n) {
      for (int b = 0; b < blocks; ++b) {
        const int m = n / group, i0 = b * kBlock, R = std::min(kBlock, T - i0), Tk = q0 + i0 + R;
        scores(S.data(), q_TND, k_TMD, i0, R, Tk, n, m, N, NKV, D, scale, q0);
        for (int r = 0; r < R; ++r) {
          float* row = S.data() + static_cast<size_t>(r) * Tk;
          const int len = q0 + i0 + r + 1;
          float mx = -INFINITY;
          for (int j = 0; j < len; ++j) mx = row[j] > mx ? row[j] : mx;
          float sum = 0.0f;
          for (int j = 0; j < len; ++j) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
          }
          const float inv = 1.0f / sum;
          for (int j = 0; j < len; ++j) row[j] *= inv;
          for (int j = len; j < Tk; ++j) row[j] = 0.0f;
          lse_NT[static_cast<size_t>(n) * T + i0 + r] = mx + std::log(sum);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, D, Tk, 1.0f, S.data(), Tk,
                    v_TMD + static_cast<size_t>(m) * D, NKV * D, 0.0f,
                    out_TND + (static_cast<size_t>(i0) * N + n) * D, N * D);
      }
    }
  }
}

void attention_backward(float* dq_TND, float* dk_TMD, float* dv_TMD, const float* dout_TND,
                        const float* q_TND, const float* k_TMD, const float* v_TMD, const float* out_TND,
                        const float* lse_NT, int T, int N, int NKV, int D, float* scratch) {
  const int group = N / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const size_t headTD = static_cast<size_t>(T) * D;
  // Per query head key/value gradients, reduced into their kv head afterwards, so heads run in parallel.
  float* dkh_NTD = scratch;
  float* dvh_NTD = scratch + N * headTD;
  std::memset(scratch, 0, sizeof(float) * 2 * N * headTD);
  const int blocks = (T + kBlock - 1) / kBlock;
#pragma omp parallel
  {
    std::vector<float> P(static_cast<size_t>(kBlock) * T), dP(static_cast<size_t>(kBlock) * T);
#pragma omp for schedule(dynamic, 1)
    for (int n = 0; n < N; ++n) {
      const int m = n / group;
      for (int b = 0; b < blocks; ++b) {
        const int i0 = b * kBlock, R = std::min(kBlock, T - i0), Tk = i0 + R;
        const float* dO = dout_TND + (static_cast<size_t>(i0) * N + n) * D;
        const float* Q = q_TND + (static_cast<size_t>(i0) * N + n) * D;
        scores(P.data(), q_TND, k_TMD, i0, R, Tk, n, m, N, NKV, D, scale, 0);
        // dP = dO V^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, Tk, D, 1.0f, dO, N * D,
                    v_TMD + static_cast<size_t>(m) * D, NKV * D, 0.0f, dP.data(), Tk);
        for (int r = 0; r < R; ++r) {
          const float* o = out_TND + (static_cast<size_t>(i0 + r) * N + n) * D;
          const float* g = dO + static_cast<size_t>(r) * N * D;
          float Di = 0.0f;
          for (int d = 0; d < D; ++d) Di += g[d] * o[d];
          const float lse = lse_NT[static_cast<size_t>(n) * T + i0 + r];
          float* p = P.data() + static_cast<size_t>(r) * Tk;
          float* ds = dP.data() + static_cast<size_t>(r) * Tk;
          const int len = i0 + r + 1;
          for (int j = 0; j < len; ++j) {
            p[j] = std::exp(p[j] - lse);
            ds[j] = p[j] * (ds[j] - Di) * scale;
          }
          for (int j = len; j < Tk; ++j) p[j] = ds[j] = 0.0f;
        }
        // dQ = dS K ; dK += dS^T Q ; dV += P^T dO
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, D, Tk, 1.0f, dP.data(), Tk,
                    k_TMD + static_cast<size_t>(m) * D, NKV * D, 0.0f,
                    dq_TND + (static_cast<size_t>(i0) * N + n) * D, N * D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, D, R, 1.0f, dP.data(), Tk, Q, N * D, 1.0f,
                    dkh_NTD + n * headTD, D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, D, R, 1.0f, P.data(), Tk, dO, N * D, 1.0f,
                    dvh_NTD + n * headTD, D);
      }
    }
  }
  const size_t ks = static_cast<size_t>(NKV) * D;
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
